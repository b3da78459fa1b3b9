package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The cgroup v2 freezer, as plain file operations on a cgroup directory, for
// the freeze policy in internal/freeze. cgroup.freeze holds the cgroup's own
// request; the "frozen" key of cgroup.events is the settled state, which also
// turns 1 when an ancestor is frozen.

// Root is the directory the Manager creates its groups in; "" when disabled.
func (m *Manager) Root() string {
	if !m.Enabled() {
		return ""
	}
	return m.root
}

// SetFreeze writes the freeze request of the cgroup at dir.
func SetFreeze(dir string, frozen bool) error {
	v := "0"
	if frozen {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte(v), 0); err != nil {
		return fmt.Errorf("write cgroup.freeze: %w", err)
	}
	return nil
}

// FreezeRequested reads the cgroup's own freeze request (cgroup.freeze).
func FreezeRequested(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.freeze"))
	if err != nil {
		return false, fmt.Errorf("read cgroup.freeze: %w", err)
	}
	switch strings.TrimSpace(string(b)) {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("parse cgroup.freeze: %q", b)
}

// Frozen reads whether every task of the cgroup has actually stopped.
func Frozen(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("read cgroup.events: %w", err)
	}
	n, err := ParseKeyed(b, "frozen")
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// Children lists the names of the child cgroups of dir, sorted.
func Children(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list cgroup children: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// SelfDir is the directory of the calling process's cgroup v2, found from
// the "0::" line of <procRoot>/self/cgroup and the cgroup2 mount in
// <procRoot>/self/mountinfo (whose root field is the part of that path the
// mount does not show).
func SelfDir(procRoot string) (string, error) {
	cg, err := os.ReadFile(filepath.Join(procRoot, "self", "cgroup"))
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	mi, err := os.ReadFile(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return selfDir(cg, mi)
}

func selfDir(cgroupText, mountinfo []byte) (string, error) {
	var rel string
	found := false
	sc := bufio.NewScanner(bytes.NewReader(cgroupText))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			rel, found = p, true
			break
		}
	}
	if !found || !strings.HasPrefix(rel, "/") {
		return "", errors.New("no cgroup v2 entry in own cgroup file")
	}
	sc = bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype src superopts
		f := strings.Fields(sc.Text())
		sep := slices.Index(f, "-")
		if sep < 5 || sep+1 >= len(f) || f[sep+1] != "cgroup2" {
			continue
		}
		root, mnt := unescapeMount(f[3]), unescapeMount(f[4])
		if root != "/" && rel != root && !strings.HasPrefix(rel, root+"/") {
			continue
		}
		return filepath.Join(mnt, strings.TrimPrefix(rel, root)), nil
	}
	return "", errors.New("no cgroup2 mount shows own cgroup")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '7' {
			return false
		}
	}
	return true
}
