package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/envd-dev/envd/e2e/vm"
	"github.com/envd-dev/envd/internal/gen/process"
)

// nfsServer is e2e/nfs-serve on the host: the volumes are the directories
// under root; the guest reaches it at vm.NFSAddr.
type nfsServer struct {
	root string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// startNFS builds and starts e2e/nfs-serve (its own module: go-nfs is a
// dependency of this test server only) with one volume, vol1.
func startNFS(work string) (*nfsServer, error) {
	bin := filepath.Join(work, "nfs-serve")
	if err := goBuild(context.Background(), "e2e/nfs-serve", bin); err != nil {
		return nil, err
	}
	n := &nfsServer{root: filepath.Join(work, "nfs"), done: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(n.root, "vol1"), 0o777); err != nil {
		return nil, err
	}
	n.cmd = exec.Command(bin, "-root", n.root, "-listen", "127.0.0.1:0")
	out, err := n.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(work, "nfs-serve.log"))
	if err != nil {
		return nil, err
	}
	n.cmd.Stderr = logf
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { n.cmd.Wait(); logf.Close(); close(n.done) }()
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case first <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-first:
		if _, err := fmt.Sscanf(line, "nfs-serve listening on 127.0.0.1:%d", &n.port); err != nil {
			n.Close()
			return nil, fmt.Errorf("nfs-serve said %q", line)
		}
		return n, nil
	case <-n.done:
		return nil, errors.New("nfs-serve exited at start (see nfs-serve.log)")
	case <-time.After(30 * time.Second):
		n.Close()
		return nil, errors.New("nfs-serve did not listen within 30s")
	}
}

func (n *nfsServer) Close() {
	if n == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Kill()
	<-n.done
}

// nfsVolume: /init volumeMounts (§18.6) against a real NFS server, E2B's
// mount options, through the guest kernel's NFSv3 client and mount.nfs:
// the volume is mounted synchronously inside /init; the same lifecycle
// does not mount again; a new lifecycle remounts; a volume the server does
// not export gives §18.6's 400 and leaves the other mount alone.
func (s *suite) nfsVolume(ctx context.Context) (string, error) {
	if s.nfs == nil {
		return "", errors.New("no NFS server (setup)")
	}
	if _, err := s.takeToken(ctx); err != nil {
		return "", err
	}
	// A sandbox image that mounts NFSv3 with locking runs rpcbind (systemd's
	// rpcbind.socket in E2B's); mount.nfs starts rpc.statd through it.
	if out, err := s.c.Output(ctx, "root", "pgrep -x rpcbind >/dev/null || rpcbind -w; pgrep -x rpcbind"); err != nil {
		return "", fmt.Errorf("rpcbind in the guest: %w (%s)", err, trim(out))
	}
	hostContent := "from the host " + randHex(8) + "\n"
	if err := os.WriteFile(filepath.Join(s.nfs.root, "vol1", "hello.txt"), []byte(hostContent), 0o644); err != nil {
		return "", err
	}
	const path = "/mnt/vol1"
	target := vm.NFSHost + ":/vol1"
	initWith := func(lifecycle string, vols ...map[string]string) (int, string, time.Duration, error) {
		t0 := time.Now()
		code, body, err := s.c.Init(ctx, map[string]any{"accessToken": s.c.Token, "lifecycleID": lifecycle, "volumeMounts": vols, "hyperloopIP": vm.NFSHost})
		return code, body, time.Since(t0), err
	}
	vol1 := map[string]string{"nfs_target": target, "path": path}
	// The mount's id in the guest's mountinfo: a remount is a new id.
	mounts := func() (string, error) {
		out, err := s.c.Output(ctx, "root", "awk -v p="+path+" '$5 == p { for (i = 7; i <= NF; i++) if ($i == \"-\") { print $1 \"/\" $(i+1) \"/\" $(i+2); break } }' /proc/self/mountinfo")
		return strings.Join(strings.Fields(out), " "), err
	}

	code, body, first, err := initWith("life-1", vol1)
	if err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("/init mounting %s at %s: %d %v\n%s", target, path, code, err, body)
	}
	m1, err := mounts()
	if err != nil {
		return "", err
	}
	if f := strings.Fields(m1); len(f) != 1 || !strings.Contains(m1, "/nfs/"+target) {
		return "", fmt.Errorf("after /init, %s in mountinfo: %q, want one nfs mount of %s", path, m1, target)
	}
	opts, err := s.c.Output(ctx, "root", "findmnt -n -o OPTIONS "+path)
	if err != nil {
		return "", err
	}
	for _, o := range []string{"vers=3", "hard", "sync", "noac", "proto=tcp", "port=2049", "mountport=2049", "mountproto=tcp", "lookupcache=none"} {
		if !strings.Contains(","+strings.TrimSpace(opts)+",", ","+o+",") {
			return "", fmt.Errorf("mount options %q lack %s", strings.TrimSpace(opts), o)
		}
	}
	// Data both ways through the guest kernel's NFS client.
	if got, err := s.c.Output(ctx, "user", "cat "+path+"/hello.txt"); err != nil || got != hostContent {
		return "", fmt.Errorf("the guest reads %q, %v; the host wrote %q", got, err, hostContent)
	}
	guestContent := "from the guest " + randHex(8)
	if out, err := s.c.Output(ctx, "root", "printf %s '"+guestContent+"' > "+path+"/from-guest.txt && sync"); err != nil {
		return "", fmt.Errorf("write in the guest: %v (%s)", err, trim(out))
	}
	if got, err := os.ReadFile(filepath.Join(s.nfs.root, "vol1", "from-guest.txt")); err != nil || string(got) != guestContent {
		return "", fmt.Errorf("the host reads %q, %v; the guest wrote %q", got, err, guestContent)
	}

	// The orchestrator's repeat /init (a retry, or a checkpoint in place):
	// same lifecycle, nothing mounted again.
	code, body, again, err := initWith("life-1", vol1)
	if err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("repeat /init, same lifecycle: %d %q %v", code, trim(body), err)
	}
	if m, err := mounts(); err != nil || m != m1 {
		return "", fmt.Errorf("same lifecycle: mountinfo %q, %v; want it unchanged, %q", m, err, m1)
	}

	// A new VM lifecycle (a resume): unmounted and mounted anew. A process
	// holding a file of the old mount open makes umount --force fail busy,
	// so the lazy fallback runs, and it keeps the old mount's id taken (the
	// kernel hands out the lowest free id: a plain remount would look the
	// same in mountinfo).
	holder, err := s.c.Start(ctx, "root", &process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", "exec sleep 600 < " + path + "/hello.txt"}}, Stdin: ptr(false)})
	if err != nil {
		return "", fmt.Errorf("a process holding %s/hello.txt: %w", path, err)
	}
	defer func() {
		s.c.Signal(context.WithoutCancel(ctx), "root", holder.Pid, process.Signal_SIGNAL_SIGKILL)
		holder.Wait(30 * time.Second)
	}()
	if err := eventually(ctx, 20*time.Second, 200*time.Millisecond, func() (bool, error) {
		out, err := s.c.Output(ctx, "root", fmt.Sprintf("readlink /proc/%d/fd/0", holder.Pid))
		return strings.TrimSpace(out) == path+"/hello.txt", fmt.Errorf("fd 0 of the holder is %q, %v", strings.TrimSpace(out), err)
	}); err != nil {
		return "", err
	}
	code, body, remount, err := initWith("life-2", vol1)
	if err != nil || code != http.StatusNoContent {
		return "", fmt.Errorf("/init, new lifecycle: %d %v\n%s", code, err, body)
	}
	m2, err := mounts()
	if err != nil {
		return "", err
	}
	if len(strings.Fields(m2)) != 1 || m2 == m1 {
		return "", fmt.Errorf("new lifecycle: mountinfo %q (before %q), want one new mount", m2, m1)
	}
	// The holder still reads the old, lazily detached mount.
	if out, err := s.c.Output(ctx, "root", fmt.Sprintf("cat /proc/%d/fd/0", holder.Pid)); err != nil || out != hostContent {
		return "", fmt.Errorf("the detached mount reads %q, %v", out, err)
	}
	if got, err := s.c.Output(ctx, "user", "cat "+path+"/from-guest.txt"); err != nil || got != guestContent {
		return "", fmt.Errorf("after the remount the guest reads %q, %v", got, err)
	}

	// A volume the server does not export: 400 with the command, the other
	// mount kept, envd healthy.
	bad := map[string]string{"nfs_target": vm.NFSHost + ":/nosuch", "path": "/mnt/bad"}
	code, body, failed, err := initWith("life-2", vol1, bad)
	if err != nil || code != http.StatusBadRequest {
		return "", fmt.Errorf("/init with an unexported volume: %d %q %v, want 400", code, trim(body), err)
	}
	const prefix = `failed to setup NFS volumes: failed to mount NFS at "/mnt/bad": `
	if !strings.HasPrefix(body, prefix) || !strings.Contains(body, "`mount -v -t nfs -o ") {
		return "", fmt.Errorf("400 body %q, want %q and the mount command", trim(body), prefix)
	}
	if m, err := mounts(); err != nil || m != m2 {
		return "", fmt.Errorf("after the failed mount, %s: %q, %v; want %q", path, m, err, m2)
	}
	if code, _, err := s.c.Get(ctx, "/health"); err != nil || code != http.StatusOK {
		return "", fmt.Errorf("/health after the failed mount: %d %v", code, err)
	}
	// Later checks snapshot and restore the VM: no NFS mount across that.
	if out, err := s.c.Output(ctx, "root", "umount "+path); err != nil {
		return "", fmt.Errorf("umount %s: %v (%s)", path, err, trim(out))
	}
	reason := strings.TrimSpace(body[len(prefix):])
	if i := strings.LastIndex(reason, "\n"); i >= 0 {
		reason = strings.TrimSpace(reason[i:])
	}
	return fmt.Sprintf("go-nfs server on the host, guest kernel NFSv3 client: mounted in /init (%s), data both ways; same lifecycle not remounted (%s); new lifecycle remounted past a busy mount (umount --lazy) (%s); unexported volume → 400 in %s (%q)",
		first.Round(time.Millisecond), again.Round(time.Millisecond), remount.Round(time.Millisecond), failed.Round(time.Millisecond), reason), nil
}
