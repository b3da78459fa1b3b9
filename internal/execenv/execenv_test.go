package execenv

import (
	"errors"
	"os"
	"slices"
	"testing"
)

func TestResolve(t *testing.T) {
	cases := []struct{ in, workdir, want string }{
		{"", "", "/home/u"},
		{"", "/work", "/work"},
		{"~", "/work", "/home/u"},
		{"~/a/../b", "", "/home/u/b"},
		{"rel/x", "/work", "/home/u/rel/x"}, // relative paths never use the workdir
		{"../../etc", "", "/etc"},
		{"/abs/../kept", "", "/abs/../kept"}, // absolute paths are returned unchanged
	}
	for _, c := range cases {
		got, err := Resolve(c.in, "/home/u", c.workdir)
		if err != nil || got != c.want {
			t.Errorf("Resolve(%q, workdir %q) = %q, %v; want %q", c.in, c.workdir, got, err, c.want)
		}
	}
	if _, err := Resolve("~root/x", "/home/u", ""); !errors.Is(err, ErrBadPath) {
		t.Errorf("~root: got %v, want ErrBadPath", err)
	}
}

func TestProcessEnvMergeOrder(t *testing.T) {
	e := NewEnv("/bin")
	e.SetInternal("WRENN_SANDBOX", "false")
	e.ReplaceVars(map[string]string{"A": "init", "HOME": "/init-home", "WRENN_SANDBOX": "hijack"})
	u := &User{Name: "u", Home: "/home/u", Shell: "/bin/bash"}
	got := e.ProcessEnv(u, map[string]string{"A": "request", "PATH": "/req"})
	want := []string{"A=request", "HOME=/init-home", "LOGNAME=u", "PATH=/req", "SHELL=/bin/bash", "USER=u", "WRENN_SANDBOX=false"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// Replace semantics: keys missing from the new map disappear.
	e.ReplaceVars(map[string]string{"B": "1"})
	d := e.Snapshot()
	if _, ok := d.Vars["A"]; ok || d.Vars["B"] != "1" || d.Vars["WRENN_SANDBOX"] != "false" {
		t.Fatalf("after replace: %v", d.Vars)
	}
}

func TestDefaultsIgnoreEmpty(t *testing.T) {
	e := NewEnv("")
	e.SetDefaultUser("user")
	e.SetDefaultWorkdir("/w")
	e.SetDefaultUser("")
	e.SetDefaultWorkdir("")
	if d := e.Snapshot(); d.User != "user" || d.Workdir != "/w" {
		t.Fatalf("%+v", d)
	}
}

func TestLookupUser(t *testing.T) {
	u, err := LookupUser("root")
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != 0 || u.GID != 0 || u.Home == "" || !slices.Contains(u.Groups, 0) {
		t.Fatalf("root: %+v", u)
	}
	if _, err := LookupUser("no-such-user-envd"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestUsersCacheSeesDatabaseChanges(t *testing.T) {
	dir := t.TempDir()
	passwd, group := dir+"/passwd", dir+"/group"
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(passwd, "root:x:0:0:root:/root:/bin/bash\n")
	write(group, "root:x:0:\n")
	c := &Users{PasswdPath: passwd, GroupPath: group}
	a, err := c.Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := c.Lookup("root"); b != a {
		t.Fatal("second lookup was not served from the cache")
	}
	// Any change to either database drops the cache (here only the stamp
	// matters: the lookup itself reads the system's databases).
	write(group, "root:x:0:\nextra:x:5:\n")
	if b, _ := c.Lookup("root"); b == a {
		t.Fatal("cache survived a change of the group database")
	}
	if _, err := c.Lookup("no-such-user-envd"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestUsersNamesCachedPerDatabaseVersion(t *testing.T) {
	dir := t.TempDir()
	passwd, group := dir+"/passwd", dir+"/group"
	for _, p := range []string{passwd, group} {
		if err := os.WriteFile(p, []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := &Users{PasswdPath: passwd, GroupPath: group}
	// The names come from the system's databases; the files above only
	// version the cache.
	if u, g := c.Names(0, 0); u != "root" || g != "root" {
		t.Fatalf("Names(0, 0) = %q, %q", u, g)
	}
	const unnamed = 4000000001
	if u, g := c.Names(unnamed, unnamed); u != "4000000001" || g != "4000000001" {
		t.Fatalf("Names of an id without a name = %q, %q", u, g)
	}
	if len(c.uidNames) != 2 || len(c.gidNames) != 2 {
		t.Fatalf("cache holds %v and %v, want both answers", c.uidNames, c.gidNames)
	}
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nu:x:5:5::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Names(0, 0)
	if len(c.uidNames) != 1 {
		t.Fatalf("cache kept %v across a passwd change", c.uidNames)
	}
}
