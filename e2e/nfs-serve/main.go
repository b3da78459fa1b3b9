// Command nfs-serve is the NFS server of the VM check nfs_volume: NFSv3 and
// its MOUNT protocol answered on one TCP port, as E2B's orchestrator serves
// sandbox volumes (its options carry mountport=2049 and port=2049, which the
// kernel's nfsd with a separate rpc.mountd cannot answer). It is built on
// github.com/willscott/go-nfs, the userspace server E2B's orchestrator uses.
//
// Every directory directly under -root is a volume, exported as /<name>; a
// MOUNT of any other path is refused with MNT3ERR_NOENT, which is how the
// check gets a failing mount from a live server. It prints
// "nfs-serve listening on ADDR" once it accepts connections.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
	"github.com/willscott/go-nfs/helpers"
	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address for NFS and MOUNT")
	root := flag.String("root", "", "directory whose subdirectories are the volumes")
	flag.Parse()
	if *root == "" {
		fmt.Fprintln(os.Stderr, "nfs-serve: -root is required")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfs-serve:", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfs-serve:", err)
		os.Exit(1)
	}
	fmt.Printf("nfs-serve listening on %s\n", ln.Addr())
	if err := serve(ln, abs); err != nil {
		fmt.Fprintln(os.Stderr, "nfs-serve:", err)
		os.Exit(1)
	}
}

// serve answers NFSv3 and MOUNT on ln for the volumes under root.
func serve(ln net.Listener, root string) error {
	return nfs.Serve(ln, helpers.NewCachingHandler(&volumes{root: root, fs: map[string]billy.Filesystem{}, refused: memfs.New()}, 4096))
}

// volumes answers MOUNT with the subdirectory the path names. One
// filesystem value per volume, made once: the caching handler keys its file
// handles by it, so a remount finds the handles it gave out before.
type volumes struct {
	root string
	mu   sync.Mutex
	fs   map[string]billy.Filesystem
	// go-nfs makes a root handle of what Mount returns even when it refuses
	// (v0.0.4 dereferences it): refusals return this empty filesystem.
	refused billy.Filesystem
}

func (v *volumes) Mount(_ context.Context, _ net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	name := strings.Trim(string(req.Dirpath), "/")
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return nfs.MountStatusErrNoEnt, v.refused, nil
	}
	dir := filepath.Join(v.root, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nfs.MountStatusErrNoEnt, v.refused, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	f, ok := v.fs[name]
	if !ok {
		f = changeFS{osfs.New(dir, osfs.WithBoundOS()), dir}
		v.fs[name] = f
	}
	return nfs.MountStatusOk, f, []nfs.AuthFlavor{nfs.AuthFlavorNull}
}

func (v *volumes) Change(f billy.Filesystem) billy.Change {
	c, _ := f.(billy.Change)
	return c
}

func (v *volumes) FSStat(_ context.Context, f billy.Filesystem, s *nfs.FSStat) error {
	c, ok := f.(changeFS)
	if !ok {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.dir, &st); err != nil {
		return err
	}
	bs := uint64(st.Bsize)
	s.TotalSize, s.FreeSize, s.AvailableSize = st.Blocks*bs, st.Bfree*bs, st.Bavail*bs
	s.TotalFiles, s.FreeFiles, s.AvailableFiles = st.Files, st.Ffree, st.Ffree
	return nil
}

// The caching handler in front gives out and resolves the file handles.
func (v *volumes) ToHandle(billy.Filesystem, []string) []byte            { return nil }
func (v *volumes) FromHandle([]byte) (billy.Filesystem, []string, error) { return nil, nil, nil }
func (v *volumes) InvalidateHandle(billy.Filesystem, []byte) error       { return nil }
func (v *volumes) HandleLimit() int                                      { return -1 }

// changeFS lets clients chmod, chown and touch: billy's osfs has no Change.
type changeFS struct {
	billy.Filesystem
	dir string
}

func (c changeFS) path(name string) string { return filepath.Join(c.dir, filepath.Clean("/"+name)) }

func (c changeFS) Chmod(name string, mode os.FileMode) error { return os.Chmod(c.path(name), mode) }
func (c changeFS) Lchown(name string, uid, gid int) error    { return os.Lchown(c.path(name), uid, gid) }
func (c changeFS) Chown(name string, uid, gid int) error     { return os.Chown(c.path(name), uid, gid) }
func (c changeFS) Chtimes(name string, atime, mtime time.Time) error {
	return os.Chtimes(c.path(name), atime, mtime)
}
