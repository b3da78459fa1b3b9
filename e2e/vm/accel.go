package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Accel is how qemu runs the guest, and why that was chosen.
type Accel struct {
	Name   string // "kvm" or "tcg"
	CPU    string // -cpu
	Reason string
}

func (a Accel) String() string { return a.Name + ": " + a.Reason }

// TCG is software emulation, which boots everywhere.
func TCG(reason string) Accel { return Accel{Name: "tcg", CPU: "max", Reason: reason} }

// kvmProbe bounds the probe boot: a working KVM prints the kernel banner in
// well under a second.
const kvmProbe = 5 * time.Second

// ChooseAccel picks KVM when a guest kernel boots under it within a short
// probe and TCG otherwise. On these machines /dev/kvm exists and
// KVM_CREATE_VM succeeds, but a nested guest hangs right after the kernel's
// setup code with no output at all; so the probe boots the image's kernel
// under KVM and waits for its first console line. ENVD_VM_ACCEL=kvm|tcg skips
// the probe.
func ChooseAccel(image, workDir string) Accel {
	switch os.Getenv("ENVD_VM_ACCEL") {
	case "kvm":
		return Accel{Name: "kvm", CPU: "host", Reason: "ENVD_VM_ACCEL=kvm"}
	case "tcg":
		return TCG("ENVD_VM_ACCEL=tcg")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return TCG("no /dev/kvm")
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return TCG(fmt.Sprintf("cannot open /dev/kvm: %v", err))
	}
	f.Close()
	qemu, err := QemuBinary()
	if err != nil {
		return TCG(err.Error())
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return TCG(err.Error())
	}
	console := filepath.Join(workDir, "kvm-probe.log")
	_ = os.Remove(console)
	var stderr bytes.Buffer
	cmd := exec.Command(qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-M", "q35,accel=kvm", "-cpu", "host", "-m", "256",
		"-kernel", filepath.Join(image, "vmlinuz"), "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
		"-chardev", "file,id=con,path="+console, "-serial", "chardev:con")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return TCG(fmt.Sprintf("KVM probe did not start: %v", err))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	deadline := time.Now().Add(kvmProbe)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return TCG(fmt.Sprintf("qemu with KVM exited during the probe: %v: %s", err, bytes.TrimSpace(stderr.Bytes())))
		case <-time.After(50 * time.Millisecond):
		}
		if b, _ := os.ReadFile(console); bytes.Contains(b, []byte("Linux version")) {
			return Accel{Name: "kvm", CPU: "host", Reason: "the kernel printed its banner under KVM within the probe"}
		}
	}
	return TCG(fmt.Sprintf("no kernel output within %s under KVM (a nested guest hangs on this machine)", kvmProbe))
}
