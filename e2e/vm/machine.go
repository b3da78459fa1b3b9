// Package vm boots the image of scripts/vm-image under qemu with envd as PID 1
// of a real Linux kernel, the way Firecracker boots a sandbox: guest address
// 169.254.0.21 behind gateway 169.254.0.22, envd's port 49983 forwarded to a
// host loopback port, MMDS v2 served on the host and reached from the guest at
// 169.254.169.254:80, the VMM driven over QMP. scripts/vm-up, scripts/vm-test
// and envd-bench -vm are built on it.
package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Guest addresses, Firecracker's convention.
const (
	GuestIP   = "169.254.0.21"
	GatewayIP = "169.254.0.22"
	EnvdPort  = 49983
	// NFSHost plays the orchestrator's in-sandbox address, where E2B's
	// sandboxes find their NFS volumes (§18.6 nfs_target).
	NFSHost = "169.254.0.23"
	NFSAddr = NFSHost + ":2049"
)

// Config describes one VM.
type Config struct {
	Image    string // directory with vmlinuz, initrd.img, rootfs.ext4 (scripts/vm-image)
	WorkDir  string // this VM's files: console log, QMP socket, disk overlay
	Disk     string // qcow2 disk to boot as is; "" makes WorkDir/disk.qcow2 over the image's rootfs
	Port     int    // host port forwarded to envd; 0 picks a free one
	MemMiB   int    // guest memory (default 1024)
	CPUs     int    // vCPUs (default 2)
	QMPPath  string // an extra QMP socket for the user; "" for none
	Incoming string // resume the state qemu's migrate wrote to this file instead of booting
	MMDSPort int    // host port of the MMDS server; 0: the guest has no MMDS
	NFSPort  int    // host port of an NFS server the guest reaches at NFSAddr; 0: none
	Init     string // PID 1 of the guest; "" is /usr/local/bin/envd
	RTCBase  string // qemu -rtc base= (the guest's clock at boot); "" is now
	Accel    Accel
	Log      io.Writer // where qemu's own stderr goes; nil discards it
}

// Machine is a running qemu.
type Machine struct {
	Cfg     Config
	Port    int
	URL     string // http://127.0.0.1:Port, envd's base URL
	Console string // serial console log: the kernel's and envd's output
	Disk    string
	QMP     *QMP
	Started time.Time

	cmd  *exec.Cmd
	done chan struct{}
	err  error // qemu's exit, valid once done is closed
}

// FreePort asks the kernel for an unused loopback port.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// QemuBinary finds qemu or says how to install it.
func QemuBinary() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("qemu-system-x86_64 not found: apt-get install qemu-system-x86 qemu-utils (or run scripts/install-deps as root)")
	}
	return p, nil
}

// NewOverlay creates a qcow2 disk at path whose unwritten blocks are read
// from base, so the cached image is never written by a VM.
func NewOverlay(path, base, baseFormat string) error {
	abs, err := filepath.EvalSymlinks(base)
	if err != nil {
		return fmt.Errorf("disk base: %w", err)
	}
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", abs, "-F", baseFormat, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	return nil
}

// Start launches qemu; it does not wait for envd (see WaitHealthy).
func Start(cfg Config) (*Machine, error) {
	qemu, err := QemuBinary()
	if err != nil {
		return nil, err
	}
	if cfg.MemMiB == 0 {
		cfg.MemMiB = 1024
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.Port == 0 {
		if cfg.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if cfg.Accel.Name == "" {
		cfg.Accel = TCG("no accelerator chosen")
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "rootfs.ext4"} {
		if _, err := os.Stat(filepath.Join(cfg.Image, f)); err != nil {
			return nil, fmt.Errorf("image incomplete (run scripts/vm-image): %w", err)
		}
	}
	m := &Machine{Cfg: cfg, Port: cfg.Port, URL: "http://127.0.0.1:" + strconv.Itoa(cfg.Port), done: make(chan struct{})}
	m.Console = filepath.Join(cfg.WorkDir, "console.log")
	if cfg.Incoming != "" {
		m.Console = filepath.Join(cfg.WorkDir, "console-resumed.log")
	}
	m.Disk = cfg.Disk
	if m.Disk == "" {
		m.Disk = filepath.Join(cfg.WorkDir, "disk.qcow2")
		if err := NewOverlay(m.Disk, filepath.Join(cfg.Image, "rootfs.ext4"), "raw"); err != nil {
			return nil, err
		}
	}
	qmpSock := filepath.Join(cfg.WorkDir, "qmp.sock")
	_ = os.Remove(qmpSock)

	appendLine := "console=ttyS0 reboot=k panic=1 quiet"
	if cfg.Init != "" {
		appendLine += " envdvm.init=" + cfg.Init
	}
	netdev := "user,id=n0,net=169.254.0.0/16,host=" + GatewayIP + ",dns=169.254.0.3,restrict=on" +
		",hostfwd=tcp:127.0.0.1:" + strconv.Itoa(cfg.Port) + "-" + GuestIP + ":" + strconv.Itoa(EnvdPort)
	if cfg.MMDSPort != 0 {
		// qemu runs the command for each connection the guest opens, so one
		// MMDS server on the host keeps its session tokens across them.
		netdev += ",guestfwd=tcp:169.254.169.254:80-cmd:socat - TCP:127.0.0.1:" + strconv.Itoa(cfg.MMDSPort)
	}
	if cfg.NFSPort != 0 {
		// The same per-connection socat: the NFS client reconnects, and
		// MOUNT comes on a connection of its own.
		netdev += ",guestfwd=tcp:" + NFSAddr + "-cmd:socat - TCP:127.0.0.1:" + strconv.Itoa(cfg.NFSPort)
	}
	rtc := "clock=host"
	if cfg.RTCBase != "" {
		rtc = "base=" + cfg.RTCBase + ",clock=host"
	}
	args := []string{
		"-name", "envd-vm", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-M", "q35,accel=" + cfg.Accel.Name, "-cpu", cfg.Accel.CPU,
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemMiB),
		"-kernel", filepath.Join(cfg.Image, "vmlinuz"), "-initrd", filepath.Join(cfg.Image, "initrd.img"),
		"-append", appendLine,
		"-chardev", "file,id=con,path=" + m.Console, "-serial", "chardev:con",
		"-drive", "file=" + m.Disk + ",format=qcow2,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile=", // no iPXE: the kernel is loaded directly
		"-rtc", rtc,
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
	}
	if cfg.QMPPath != "" {
		_ = os.Remove(cfg.QMPPath)
		args = append(args, "-qmp", "unix:"+cfg.QMPPath+",server=on,wait=off")
	}
	if cfg.Incoming != "" {
		if _, err := os.Stat(cfg.Incoming); err != nil {
			return nil, fmt.Errorf("--incoming: %w", err)
		}
		args = append(args, "-incoming", "exec:cat "+shellQuote(cfg.Incoming))
	}
	m.cmd = exec.Command(qemu, args...)
	m.cmd.Stdout, m.cmd.Stderr = cfg.Log, cfg.Log
	// Its own process group: a Ctrl-C on the terminal reaches vm-up, which
	// shuts the guest down in order, not qemu directly. Pdeathsig: no qemu
	// outlives the process that started it, even a killed one.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	m.Started = time.Now()
	// Pdeathsig follows the forking thread: keep this goroutine on one that
	// outlives the fork (an unlocked thread is never ended by the runtime).
	runtime.LockOSThread()
	err = m.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	q, err := DialQMP(qmpSock, 10*time.Second)
	if err != nil {
		m.Kill()
		return nil, fmt.Errorf("%w%s", err, m.exitNote())
	}
	m.QMP = q
	if err := widenBacklog(m.PID(), cfg.Port); err != nil {
		m.Kill()
		return nil, fmt.Errorf("hostfwd 127.0.0.1:%d: %w%s", cfg.Port, err, m.exitNote())
	}
	return m, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// PID is qemu's process id.
func (m *Machine) PID() int { return m.cmd.Process.Pid }

// Done is closed when qemu has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// ExitErr is qemu's exit status once Done is closed.
func (m *Machine) ExitErr() error { <-m.done; return m.err }

func (m *Machine) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

func (m *Machine) exitNote() string {
	if !m.exited() {
		return ""
	}
	return fmt.Sprintf(" (qemu exited: %v)", m.err)
}

// ConsoleTail is the last n lines of the serial console.
func (m *Machine) ConsoleTail(n int) string {
	b, _ := os.ReadFile(m.Console)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Resume continues a VM that arrived paused from an incoming migration (its
// source was stopped when saved); one that arrives running is left alone.
func (m *Machine) Resume(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := m.QMP.Status()
		if err != nil {
			return err
		}
		switch st {
		case "running":
			return nil
		case "paused", "postmigrate", "prelaunch":
			_, err := m.QMP.Execute("cont", nil)
			return err
		case "inmigrate":
		default:
			return fmt.Errorf("VM in state %q after the incoming migration", st)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("incoming migration not done after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitHealthy polls GET /health until it answers 200. A qemu that exits or a
// guest that does not answer in time fails with the console's tail.
func (m *Machine) WaitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(m.Started), nil
			}
		}
		if m.exited() {
			return 0, fmt.Errorf("qemu exited before envd answered /health: %v\n--- serial console (last 40 lines of %s)\n%s", m.err, m.Console, m.ConsoleTail(40))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("envd did not answer /health on %s within %s (%s)\n--- serial console (last 40 lines of %s)\n%s",
				m.URL, timeout, m.Cfg.Accel, m.Console, m.ConsoleTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Shutdown presses Ctrl-Alt-Del and waits up to timeout for qemu to exit;
// then it quits qemu, then kills it. It returns how long the guest took.
func (m *Machine) Shutdown(timeout time.Duration) (time.Duration, error) {
	if m.exited() {
		return 0, nil
	}
	t0 := time.Now()
	if err := m.QMP.CtrlAltDel(); err != nil && !m.exited() {
		m.Kill()
		return 0, fmt.Errorf("send Ctrl-Alt-Del: %w", err)
	}
	select {
	case <-m.done:
		return time.Since(t0), nil
	case <-time.After(timeout):
	}
	m.Kill()
	return time.Since(t0), fmt.Errorf("qemu still running %s after Ctrl-Alt-Del; killed it\n--- serial console (last 20 lines)\n%s", timeout, m.ConsoleTail(20))
}

// Kill ends qemu at once: QMP quit, then SIGKILL.
func (m *Machine) Kill() {
	if m.exited() {
		return
	}
	if m.QMP != nil {
		_, _ = m.QMP.Execute("quit", nil)
		select {
		case <-m.done:
			m.QMP.Close()
			return
		case <-time.After(5 * time.Second):
		}
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.QMP.Close()
}

// AddHostFwd forwards host 127.0.0.1:hostPort to the guest's guestPort.
func (m *Machine) AddHostFwd(hostPort, guestPort int) error {
	out, err := m.QMP.HMP(fmt.Sprintf("hostfwd_add n0 tcp:127.0.0.1:%d-%s:%d", hostPort, GuestIP, guestPort))
	if err == nil && strings.TrimSpace(out) != "" {
		err = fmt.Errorf("hostfwd_add: %s", strings.TrimSpace(out))
	}
	if err == nil {
		err = widenBacklog(m.PID(), hostPort)
	}
	return err
}

// RemoveHostFwd undoes AddHostFwd.
func (m *Machine) RemoveHostFwd(hostPort int) error {
	out, err := m.QMP.HMP(fmt.Sprintf("hostfwd_remove n0 tcp:127.0.0.1:%d", hostPort))
	if err == nil && !strings.Contains(out, "removed") {
		err = fmt.Errorf("hostfwd_remove: %s", strings.TrimSpace(out))
	}
	return err
}

// Save snapshots the VM as a host agent does with Firecracker: QMP stop,
// migrate the memory and device state to file (exec:cat > file), quit qemu,
// then copy its disk to file.disk. The saved state resumes paused.
func (m *Machine) Save(file string) (time.Duration, error) {
	t0 := time.Now()
	if _, err := m.QMP.Execute("stop", nil); err != nil {
		return 0, err
	}
	if _, err := m.QMP.Execute("migrate", map[string]any{"uri": "exec:cat > " + shellQuote(file)}); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := m.QMP.Execute("query-migrate", nil)
		if err != nil {
			return 0, err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return 0, err
		}
		if st.Status == "completed" {
			break
		}
		if st.Status == "failed" || st.Status == "cancelled" {
			return 0, fmt.Errorf("migrate: %s %s", st.Status, st.ErrorDesc)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("migrate still %s after 2 minutes", st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(t0)
	m.Kill()
	out, err := exec.Command("cp", "--sparse=always", m.Disk, file+".disk").CombinedOutput()
	if err != nil {
		return took, fmt.Errorf("copy the disk: %v: %s", err, out)
	}
	return took, nil
}

// StartSaved resumes the state Save wrote to file in a new qemu (cfg.Port
// 0 picks a new host port) over a new layer on file.disk, so one saved
// state resumes any number of times, and continues it.
func StartSaved(cfg Config, file string) (*Machine, error) {
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	cfg.Incoming = file
	cfg.Disk = filepath.Join(cfg.WorkDir, "disk.qcow2")
	if err := NewOverlay(cfg.Disk, file+".disk", "qcow2"); err != nil {
		return nil, err
	}
	m, err := Start(cfg)
	if err != nil {
		return nil, err
	}
	if err := m.Resume(60 * time.Second); err != nil {
		m.Kill()
		return nil, err
	}
	return m, nil
}
