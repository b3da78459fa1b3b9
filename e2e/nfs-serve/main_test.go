package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// The server as the VM check's guest meets it, through a userspace NFSv3
// client here (this machine's kernel has no NFS client): MOUNT and NFS on
// the one port, a volume per directory, other paths refused.
func TestServeVolumes(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "vol1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "vol1", "hello.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "secret.txt"), []byte("outside every volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln, root)

	mount := func(path string) (*nfsc.Mount, *nfsc.Target, error) {
		c, err := rpc.DialTCP("tcp", ln.Addr().String(), false)
		if err != nil {
			t.Fatal(err)
		}
		m := &nfsc.Mount{Client: c}
		tg, err := m.Mount(path, rpc.AuthNull)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return m, tg, nil
	}
	m, tg, err := mount("/vol1")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	f, err := tg.Open("/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "from the host\n" {
		t.Errorf("read hello.txt over NFS: %q, %v", b, err)
	}
	w, err := tg.OpenFile("/from-client.txt", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("from the client")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "vol1", "from-client.txt")); err != nil || string(b) != "from the client" {
		t.Errorf("the file written over NFS holds %q, %v", b, err)
	}
	if _, err := tg.Open("/../secret.txt"); err == nil {
		t.Error("a path above the volume opened")
	}
	for _, p := range []string{"/nosuch", "/", "/vol1/../", "/hello.txt"} {
		if _, _, err := mount(p); err == nil {
			t.Errorf("MOUNT %q succeeded; want MNT3ERR_NOENT", p)
		}
	}
}
