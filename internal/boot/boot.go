// Package boot prepares what a bare VM lacks when envd is its init: the
// kernel pseudo filesystems, /dev/shm, /tmp and the loopback interface. The
// work is a table of steps, each checked first and logged, so a reader sees
// the whole init sequence in one place. Only PID 1 runs it; any other envd
// mounts nothing. Used by daemon.
package boot

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CtrlAltDelStep names the step that makes the kernel send Ctrl-Alt-Del to
// envd as SIGINT instead of rebooting.
const CtrlAltDelStep = "route Ctrl-Alt-Del to envd"

// NoFileStep names the step that raises envd's open-file limit.
const NoFileStep = "raise the open-file limit"

// maxNoFile caps the open-file limit: more than 10,000 live processes need,
// a bound on what a runaway can hold.
const maxNoFile = 1 << 20

// Step is one piece of setup. Done reports whether the system already has it
// (a rootfs or an init before envd may have done it); Do makes it so.
type Step struct {
	Name string
	Done func() (bool, error)
	Do   func() error
}

// Boot runs the steps under Root ("/" in a VM; tests use a directory inside
// a private mount namespace).
type Boot struct {
	Root string
	Log  *slog.Logger
}

func (b Boot) path(p string) string { return filepath.Join(b.Root, p) }

// Steps is the init sequence, in order: later steps need earlier ones
// (devpts and shm live on /dev, cgroup2 on /sys).
func (b Boot) Steps() []Step {
	return []Step{
		b.mount("mount /proc", "/proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", unix.PROC_SUPER_MAGIC, 0o555),
		{
			// The kernel reboots at once on Ctrl-Alt-Del unless init asks to
			// get it as SIGINT. The VMM's Ctrl-Alt-Del (Firecracker's
			// SendCtrlAltDel) is how a host stops a sandbox, and envd's
			// SIGINT handling is the ordered shutdown it should get.
			Name: CtrlAltDelStep,
			Done: func() (bool, error) {
				v, err := os.ReadFile(b.path("/proc/sys/kernel/ctrl-alt-del"))
				if err != nil {
					return false, fmt.Errorf("read ctrl-alt-del sysctl: %w", err)
				}
				return strings.TrimSpace(string(v)) == "0", nil
			},
			Do: func() error {
				err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
				if errors.Is(err, unix.EINVAL) {
					// reboot(2) refuses it in a PID namespace: that machine's
					// own init gets the keys, whatever we ask.
					return fmt.Errorf("reboot(CAD_OFF): not the init of the machine's PID namespace: %w", err)
				}
				if err != nil {
					return fmt.Errorf("reboot(CAD_OFF): %w", err)
				}
				return nil
			},
		},
		b.mount("mount /sys", "/sys", "sysfs", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", unix.SYSFS_MAGIC, 0o555),
		{
			Name: "mount /dev",
			// A rootfs /dev may be an empty directory; /dev/null shows a real one.
			Done: func() (bool, error) { return isCharDev(b.path("/dev/null")), nil },
			Do: func() error {
				return mountAt(b.path("/dev"), "devtmpfs", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755)
			},
		},
		b.mount("mount /dev/pts", "/dev/pts", "devpts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", unix.DEVPTS_SUPER_MAGIC, 0o755),
		{
			Name: "link /dev/ptmx",
			Done: func() (bool, error) { _, err := os.Lstat(b.path("/dev/ptmx")); return err == nil, nil },
			Do:   func() error { return os.Symlink("pts/ptmx", b.path("/dev/ptmx")) },
		},
		b.mount("mount /dev/shm", "/dev/shm", "shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777", unix.TMPFS_MAGIC, 0o1777),
		b.mount("mount /sys/fs/cgroup", "/sys/fs/cgroup", "cgroup2", "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", unix.CGROUP2_SUPER_MAGIC, 0o755),
		{
			// An existing /tmp is the template's and may hold its files, so
			// only a missing one gets a tmpfs.
			Name: "mount /tmp",
			Done: func() (bool, error) { return exists(b.path("/tmp")), nil },
			Do: func() error {
				return mountAt(b.path("/tmp"), "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777", 0o1777)
			},
		},
		{
			// A kernel starts init with 1024 open files (hard 4096); envd
			// holds two or three pipe ends per live process, so thousands
			// of processes need more. Its children inherit the new limit.
			Name: NoFileStep,
			Done: func() (bool, error) {
				want, err := b.nrOpen()
				if err != nil {
					return false, err
				}
				var lim unix.Rlimit
				if err := unix.Prlimit(0, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
					return false, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
				}
				return lim.Cur >= want, nil
			},
			Do: func() error {
				want, err := b.nrOpen()
				if err != nil {
					return err
				}
				// prlimit, not setrlimit: both raise the limit, but
				// syscall.Setrlimit would also make Go restore the old
				// one in each child, behind this step's back.
				if err := unix.Prlimit(0, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}, nil); err != nil {
					return fmt.Errorf("set RLIMIT_NOFILE to %d: %w", want, err)
				}
				return nil
			},
		},
		{
			Name: "bring up lo",
			Done: func() (bool, error) {
				up, err := loopbackUp()
				return up, err
			},
			Do: setLoopbackUp,
		},
	}
}

// nrOpen is the open-file limit to raise to: the kernel's ceiling
// (fs.nr_open, read under Root once /proc is mounted), at most maxNoFile.
func (b Boot) nrOpen() (uint64, error) {
	v, err := os.ReadFile(b.path("/proc/sys/fs/nr_open"))
	if err != nil {
		return 0, fmt.Errorf("read fs.nr_open: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(v)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse fs.nr_open: %w", err)
	}
	return min(n, maxNoFile), nil
}

// Run performs every step not yet done. A failed step is logged and the rest
// still run: envd serving without /dev/shm beats envd not serving at all.
func (b Boot) Run() error {
	var errs []error
	for _, s := range b.Steps() {
		done, err := s.Done()
		if err != nil {
			b.Log.Warn("boot step check failed", "step", s.Name, "err", err)
		}
		if done {
			b.Log.Info("boot step already done", "step", s.Name)
			continue
		}
		if err := s.Do(); err != nil {
			b.Log.Error("boot step failed", "step", s.Name, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
			continue
		}
		b.Log.Info("boot step done", "step", s.Name)
	}
	return errors.Join(errs...)
}

// IfPID1 runs the steps when the caller is PID 1, and otherwise does nothing:
// an envd started by another init must not touch its mounts.
func (b Boot) IfPID1() error {
	if os.Getpid() != 1 {
		b.Log.Debug("not PID 1: no boot setup")
		return nil
	}
	return b.Run()
}

func (b Boot) mount(name, target, source, fstype string, flags uintptr, data string, magic int64, mode os.FileMode) Step {
	p := b.path(target)
	return Step{
		Name: name,
		Done: func() (bool, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(p, &st); err != nil {
				if errors.Is(err, unix.ENOENT) {
					return false, nil
				}
				return false, fmt.Errorf("statfs %s: %w", p, err)
			}
			// The magic alone would call a /dev/shm directory on a tmpfs
			// /dev mounted; a mount point also has its own device.
			return st.Type == magic && isMountPoint(p), nil
		},
		Do: func() error { return mountAt(p, source, fstype, flags, data, mode) },
	}
}

func mountAt(target, source, fstype string, flags uintptr, data string, mode os.FileMode) error {
	if err := os.MkdirAll(target, mode.Perm()); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// isMountPoint compares the device of p and its parent; the root of a mount
// is the only place they differ.
func isMountPoint(p string) bool {
	var a, b unix.Stat_t
	if unix.Stat(p, &a) != nil || unix.Stat(filepath.Dir(p), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

func isCharDev(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// loopbackUp reads lo's flags with SIOCGIFFLAGS: no netlink library and no
// ip binary needed in the rootfs.
func loopbackUp() (bool, error) {
	fd, ifr, err := loopbackReq()
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	return ifr.Uint16()&unix.IFF_UP != 0, nil
}

func setLoopbackUp() error {
	fd, ifr, err := loopbackReq()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo flags: %w", err)
	}
	return nil
}

func loopbackReq() (int, *unix.Ifreq, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("open socket for ioctl: %w", err)
	}
	ifr, err := unix.NewIfreq("lo")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("get lo flags: %w", err)
	}
	return fd, ifr, nil
}
