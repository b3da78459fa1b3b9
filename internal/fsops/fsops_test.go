package fsops

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsmeta"
	"github.com/envd-dev/envd/internal/testkit"
)

// newDescriber is the Describer the Filesystem service builds: names from
// execenv's cache of the user and group databases.
func newDescriber() *Describer { return NewDescriberNames((&execenv.Users{}).Names) }

func ids(t *testing.T, u *user.User) (uint32, uint32) {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(uid), uint32(gid)
}

func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	testkit.RequireXattrs(t, dir)
	file := filepath.Join(dir, "file.txt")
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o644); err != nil { // independent of umask
		t.Fatal(err)
	}
	if err := fsmeta.Replace(file, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("file.txt", link); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken")
	if err := os.Symlink("nowhere", broken); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	suid := filepath.Join(dir, "suid")
	if err := os.WriteFile(suid, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o755|fs.ModeSetuid); err != nil {
		t.Fatal(err)
	}

	d := newDescriber()
	me, _ := user.Current()
	meGroup, _ := user.LookupGroupId(me.Gid)
	for _, tc := range []struct {
		path        string
		typ         Type
		size        int64
		mode        uint32
		perms       string
		target      string // "" = no symlink_target
		metadataKey string
	}{
		{path: file, typ: TypeFile, size: 5, mode: 0o644, perms: "-rw-r--r--", metadataKey: "k"},
		{path: sub, typ: TypeDir, mode: 0o755, perms: "drwxr-xr-x"},
		{path: link, typ: TypeFile, size: int64(len("file.txt")), mode: 0o644, perms: "Lrwxrwxrwx", target: file, metadataKey: "k"},
		{path: broken, typ: TypeUnknown, size: int64(len("nowhere")), mode: 0, perms: "Lrwxrwxrwx", target: broken},
		{path: loop, typ: TypeUnknown, size: int64(len("loop")), mode: 0, perms: "Lrwxrwxrwx", target: loop},
		{path: suid, typ: TypeFile, mode: 0o755, perms: "urwxr-xr-x"},
		{path: "/dev/null", typ: TypeUnknown, mode: 0o666, perms: "Dcrw-rw-rw-"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			e, err := d.Describe(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if e.Name != filepath.Base(tc.path) || e.Path != tc.path {
				t.Errorf("name/path = %q %q", e.Name, e.Path)
			}
			if e.Type != tc.typ {
				t.Errorf("type = %d, want %d", e.Type, tc.typ)
			}
			if tc.typ != TypeDir && tc.path != "/dev/null" && e.Size != tc.size {
				t.Errorf("size = %d, want %d", e.Size, tc.size)
			}
			if tc.typ == TypeDir && e.Size <= 0 {
				t.Errorf("dir size = %d, want > 0", e.Size)
			}
			if e.Mode != tc.mode {
				t.Errorf("mode = %o, want %o", e.Mode, tc.mode)
			}
			if e.Permissions != tc.perms {
				t.Errorf("permissions = %q, want %q", e.Permissions, tc.perms)
			}
			if tc.path != "/dev/null" && (e.Owner != me.Username || e.Group != meGroup.Name) {
				t.Errorf("owner/group = %s/%s, want %s/%s", e.Owner, e.Group, me.Username, meGroup.Name)
			}
			if e.ModTime.IsZero() {
				t.Error("zero mtime")
			}
			switch {
			case tc.target == "" && e.SymlinkTarget != nil:
				t.Errorf("symlink_target = %q on a non-link", *e.SymlinkTarget)
			case tc.target != "" && (e.SymlinkTarget == nil || *e.SymlinkTarget != tc.target):
				t.Errorf("symlink_target = %v, want %q", e.SymlinkTarget, tc.target)
			}
			if tc.metadataKey != "" && e.Metadata[tc.metadataKey] != "v" {
				t.Errorf("metadata = %v, want k=v", e.Metadata)
			}
			if tc.metadataKey == "" && len(e.Metadata) != 0 {
				t.Errorf("metadata = %v, want none", e.Metadata)
			}
		})
	}
	if _, err := d.Describe(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if _, err := d.Describe(filepath.Join(file, "child")); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("child of a file: %v, want ENOTDIR", err)
	}
	if _, err := d.Describe(filepath.Join(loop, "child")); !errors.Is(err, unix.ELOOP) {
		t.Errorf("child of a loop: %v, want ELOOP", err)
	}
}

// Owner names fall back to the decimal id when no account has it.
func TestDescribeUnknownOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to an arbitrary uid needs root")
	}
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f, 54321, 54322); err != nil {
		t.Fatal(err)
	}
	e, err := newDescriber().Describe(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.LookupId("54321"); err == nil {
		t.Skip("uid 54321 exists on this machine")
	}
	if e.Owner != "54321" || e.Group != "54322" {
		t.Fatalf("owner/group = %s/%s, want 54321/54322", e.Owner, e.Group)
	}
}

func TestValidatePath(t *testing.T) {
	for _, bad := range []string{"", "a\x00b", "bad\xffutf8", "/tmp/" + strings.Repeat("n", 256), "/" + strings.Repeat("a/", 2048)} {
		if err := ValidatePath(bad); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ValidatePath(%.30q) = %v, want ErrInvalidPath", bad, err)
		}
	}
	for _, good := range []string{"/", "rel/x", "/tmp/" + strings.Repeat("n", 255), "/ünï/cødé"} {
		if err := ValidatePath(good); err != nil {
			t.Errorf("ValidatePath(%.30q) = %v", good, err)
		}
	}
}

// New directories belong to the acting user; existing parents keep their owner.
func TestMakeDirOwnership(t *testing.T) {
	u := testkit.AddUser(t, "fsops")
	uid, gid := ids(t, u)
	dir := t.TempDir()
	target := filepath.Join(dir, "a", "b", "c")
	if err := MakeDir(target, uid, gid); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), target} {
		if gu, gg := owner(t, p); gu != uid || gg != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, gu, gg, uid, gid)
		}
	}
	if gu, _ := owner(t, dir); gu != 0 {
		t.Errorf("existing parent re-owned to %d", gu)
	}
	if err := MakeDir(target, uid, gid); !errors.Is(err, ErrExists) {
		t.Errorf("second MakeDir: %v, want ErrExists", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MakeDir(file, uid, gid); !errors.Is(err, ErrNotDir) {
		t.Errorf("MakeDir over a file: %v, want ErrNotDir", err)
	}
	if err := MakeDir(filepath.Join(file, "x"), uid, gid); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("MakeDir under a file: %v, want ENOTDIR", err)
	}
}

// Move keeps xattrs (metadata) and creates the destination's parents owned by the user.
func TestMove(t *testing.T) {
	u := testkit.AddUser(t, "fsops")
	uid, gid := ids(t, u)
	dir := t.TempDir()
	testkit.RequireXattrs(t, dir)
	src := filepath.Join(dir, "src.txt")
	if err := os.WriteFile(src, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fsmeta.Replace(src, map[string]string{"owner": "me", "tag": "x"}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "new", "deeper", "dst.txt")
	if err := Move(src, dst, uid, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source still there: %v", err)
	}
	md, err := fsmeta.Read(dst)
	if err != nil {
		t.Fatal(err)
	}
	if md["owner"] != "me" || md["tag"] != "x" || len(md) != 2 {
		t.Errorf("metadata after move = %v", md)
	}
	for _, p := range []string{filepath.Join(dir, "new"), filepath.Join(dir, "new", "deeper")} {
		if gu, gg := owner(t, p); gu != uid || gg != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, gu, gg, uid, gid)
		}
	}
	if err := Move(filepath.Join(dir, "missing"), dst, uid, gid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing source: %v", err)
	}
	if err := Move(dst, filepath.Join(dst, "under-a-file"), uid, gid); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("destination under a file: %v, want ENOTDIR", err)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Remove(tree); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tree); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("tree still there: %v", err)
	}
	if err := Remove(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing path: %v, want nil", err)
	}
	if err := Remove(filepath.Join(file, "child")); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("child of a file: %v, want ENOTDIR", err)
	}
	if err := Remove("/"); !errors.Is(err, ErrRemoveRoot) {
		t.Errorf("Remove(/): %v", err)
	}
	if err := Remove("//"); !errors.Is(err, ErrRemoveRoot) {
		t.Errorf("Remove(//): %v", err)
	}
}

// List walks in filepath.WalkDir order to the requested depth, names entries
// by the requested (unresolved) path, and does not enter symlinked dirs.
func TestList(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/deep/deeper"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "file1.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("subdir2", filepath.Join(dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	rel := func(es []Entry, base string) string {
		var out []string
		for _, e := range es {
			out = append(out, strings.TrimPrefix(e.Path, base+"/"))
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		depth int
		want  string
	}{
		{0, "file1.txt,linkdir,subdir1,subdir2"},
		{1, "file1.txt,linkdir,subdir1,subdir2"},
		{2, "file1.txt,linkdir,subdir1,subdir1/subdir1_1,subdir1/subdir1_2,subdir2,subdir2/deep"},
		{10, "file1.txt,linkdir,subdir1,subdir1/subdir1_1,subdir1/subdir1_2,subdir2,subdir2/deep,subdir2/deep/deeper"},
	} {
		es, err := List(newDescriber(), alias, tc.depth)
		if err != nil {
			t.Fatal(err)
		}
		if got := rel(es, alias); got != tc.want {
			t.Errorf("depth %d: %s\nwant %s", tc.depth, got, tc.want)
		}
	}
	es, err := List(newDescriber(), dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if es[1].Name != "linkdir" || es[1].Type != TypeDir || es[1].SymlinkTarget == nil || *es[1].SymlinkTarget != filepath.Join(dir, "subdir2") {
		t.Errorf("linkdir entry = %+v", es[1])
	}

	if _, err := List(newDescriber(), filepath.Join(dir, "file1.txt"), 1); !errors.Is(err, ErrNotDir) {
		t.Errorf("list a file: %v, want ErrNotDir", err)
	}
	if _, err := List(newDescriber(), filepath.Join(dir, "missing"), 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("list missing: %v", err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	if _, err := List(newDescriber(), loop, 1); !errors.Is(err, unix.ELOOP) {
		t.Errorf("list a symlink loop: %v, want ELOOP", err)
	}
}

// A directory large enough to be described on several goroutines still
// comes back in WalkDir order, and each entry matches its own lstat and
// xattrs (a mix-up between workers would pair a name with another's data).
func TestListLargeMatchesWalkDir(t *testing.T) {
	dir := t.TempDir()
	testkit.RequireXattrs(t, dir)
	for i := range 500 {
		p := filepath.Join(dir, fmt.Sprintf("e%03d", (i*7)%500))
		if i%50 == 0 {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			for j := range 3 {
				if err := os.WriteFile(filepath.Join(p, fmt.Sprint("c", j)), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte("x"), i), fs.FileMode(0o600+i%0o100)); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := fsmeta.Replace(p, map[string]string{"n": p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && p != dir {
			want = append(want, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Both ways of reading metadata: listxattrat first, and the path-only
	// fallback kernels before 6.13 get.
	withoutAt := newDescriber()
	withoutAt.noXattrAt.Store(true)
	for _, d := range []*Describer{newDescriber(), withoutAt} {
		listMatches(t, d, dir, want)
	}
}

func listMatches(t *testing.T, d *Describer, dir string, want []string) {
	es, err := List(d, dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(want) {
		t.Fatalf("%d entries, want %d", len(es), len(want))
	}
	for i, e := range es {
		if e.Path != want[i] || e.Name != filepath.Base(want[i]) {
			t.Fatalf("entry %d is %s (%s), want %s", i, e.Path, e.Name, want[i])
		}
		fi, err := os.Lstat(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		if e.Size != fi.Size() || e.Permissions != fi.Mode().String() || !e.ModTime.Equal(fi.ModTime()) || (e.Type == TypeDir) != fi.IsDir() {
			t.Errorf("%s: size %d perms %s mtime %v dir %v; lstat says %d %s %v %v",
				e.Path, e.Size, e.Permissions, e.ModTime, e.Type == TypeDir, fi.Size(), fi.Mode(), fi.ModTime(), fi.IsDir())
		}
		md, err := fsmeta.Read(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		if e.Metadata["n"] != md["n"] || len(e.Metadata) != len(md) {
			t.Errorf("%s: metadata %v, want %v", e.Path, e.Metadata, md)
		}
	}
}
