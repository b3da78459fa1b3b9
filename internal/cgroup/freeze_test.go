package cgroup

import "testing"

func TestSelfDirParse(t *testing.T) {
	const hostMounts = "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" +
		"41 30 0:35 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw\n"
	tests := []struct {
		cgroup, mountinfo, want string
		ok                      bool
	}{
		{"9:name=systemd:/\n0::/envd\n", hostMounts, "/sys/fs/cgroup/unified/envd", true},
		{"0::/\n", hostMounts, "/sys/fs/cgroup/unified", true},
		// A bind mount of a subtree: its root field is cut from the path.
		{"0::/a/b\n", "50 1 0:35 /a /mnt/cg\\040x rw - cgroup2 none rw\n", "/mnt/cg x/b", true},
		{"0::/elsewhere\n", "50 1 0:35 /a /mnt/cg rw - cgroup2 none rw\n", "", false},
		{"1:cpu:/\n", hostMounts, "", false},
		{"0::/x\n", "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "", false},
	}
	for _, tt := range tests {
		got, err := selfDir([]byte(tt.cgroup), []byte(tt.mountinfo))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("selfDir(%q) = %q, %v; want %q ok=%v", tt.cgroup, got, err, tt.want, tt.ok)
		}
	}
}
