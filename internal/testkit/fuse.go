package testkit

import (
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// MountFUSE mounts a real FUSE filesystem, served by this test process, on
// a new temp dir and returns the mount point. The filesystem is one empty
// root directory: it answers INIT, GETATTR and STATFS and refuses the rest
// with ENOSYS, which is enough to stat, statfs and inotify-watch it. Tests
// use it for the network-mount refusal of watches (§9.3), since statfs
// reports FUSE_SUPER_MAGIC for it. Needs root and /dev/fuse.
func MountFUSE(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	// A raw blocking fd: the runtime poller cannot poll /dev/fuse.
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no usable /dev/fuse: %v", err)
	}
	dir := t.TempDir()
	opts := "fd=" + strconv.Itoa(dev) + ",rootmode=40000,user_id=0,group_id=0"
	if err := unix.Mount("testkit", dir, "fuse.testkit", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(dev)
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveFUSE(dev)
		// Closing the device aborts the connection, so a server that stopped
		// early fails pending and later calls instead of hanging them.
		unix.Close(dev)
	}()
	t.Cleanup(func() {
		// Detaching destroys the connection, so the server's read fails with
		// ENODEV and it returns.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount FUSE %s: %v", dir, err)
		}
		<-done
	})
	return dir
}

// FUSE protocol numbers (include/uapi/linux/fuse.h).
const (
	fuseGetattr     = 3
	fuseForget      = 2
	fuseStatfs      = 17
	fuseInit        = 26
	fuseInterrupt   = 36
	fuseBatchForget = 42
	fuseInHeaderLen = 40
)

func serveFUSE(dev int) {
	le := binary.LittleEndian
	buf := make([]byte, 128*1024)
	for {
		n, err := unix.Read(dev, buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
				continue // interrupted, or a request the kernel withdrew
			}
			return
		}
		if n < fuseInHeaderLen {
			continue
		}
		opcode := le.Uint32(buf[4:])
		unique := le.Uint64(buf[8:])
		var body []byte
		errno := int32(0)
		switch opcode {
		case fuseForget, fuseBatchForget, fuseInterrupt:
			continue // these take no reply
		case fuseInit:
			in := buf[fuseInHeaderLen:]
			body = make([]byte, 64)
			le.PutUint32(body[0:], 7)                          // major
			le.PutUint32(body[4:], min(le.Uint32(in[4:]), 31)) // minor
			le.PutUint32(body[8:], le.Uint32(in[8:]))          // max_readahead
			le.PutUint16(body[16:], 16)                        // max_background
			le.PutUint16(body[18:], 12)                        // congestion_threshold
			le.PutUint32(body[20:], 4096)                      // max_write
			le.PutUint32(body[24:], 1)                         // time_gran
		case fuseGetattr:
			body = make([]byte, 16+88)
			le.PutUint64(body[0:], 1) // attr_valid seconds
			attr := body[16:]
			le.PutUint64(attr[0:], 1)                   // ino
			le.PutUint32(attr[60:], unix.S_IFDIR|0o755) // mode
			le.PutUint32(attr[64:], 2)                  // nlink
			le.PutUint32(attr[80:], 4096)               // blksize
		case fuseStatfs:
			body = make([]byte, 80)
			le.PutUint32(body[40:], 4096) // bsize
			le.PutUint32(body[44:], 255)  // namelen
			le.PutUint32(body[48:], 4096) // frsize
		default:
			errno = -int32(unix.ENOSYS)
		}
		out := make([]byte, 16+len(body))
		le.PutUint32(out[0:], uint32(len(out)))
		le.PutUint32(out[4:], uint32(errno))
		le.PutUint64(out[8:], unique)
		copy(out[16:], body)
		if _, err := unix.Write(dev, out); err != nil && !errors.Is(err, unix.ENOENT) {
			return
		}
	}
}
