package fsops

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackWindow is how much written data accumulates before its
// writeback is started. Large enough that each request to the disk is a
// long sequential run, small enough that the final fsync of an upload finds
// at most a couple of windows still to write.
const writebackWindow = 8 << 20

// writebackFile writes to f and starts the kernel's writeback of every
// completed window while the rest of the content is still arriving, so that
// the fsync which makes the file durable has little left to do: the disk
// works while the network does, instead of after it. It changes nothing
// about what reaches the disk or when the write counts as durable: that is
// still the fsync after the last byte.
//
// Starting writeback (SYNC_FILE_RANGE_WRITE) does not wait for it. Before a
// window is started, the one before the previous is waited for
// (SYNC_FILE_RANGE_WAIT_BEFORE), which bounds the dirty pages one upload
// holds to about three windows, whatever the size of the upload, instead of
// leaving the page cache to fill at network speed and the whole backlog to
// the final fsync.
type writebackFile struct {
	f       *os.File
	written int64 // bytes written so far, from offset 0
	started int64 // writeback was started for [0, started)
	prev    int64 // start of the window started last
	broken  bool  // sync_file_range unsupported here: plain writes from now on
}

func (w *writebackFile) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.written += int64(n)
	if err == nil && !w.broken && w.written-w.started >= writebackWindow {
		w.kick()
	}
	return n, err
}

// kick waits for the window before the previous one and starts writeback
// of the one just completed. Failures only lose the overlap: the final
// fsync reports any I/O error.
func (w *writebackFile) kick() {
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.broken = true
		return
	}
	from, to, waitFrom, waitTo := w.started, w.written, int64(0), w.prev
	_ = rc.Control(func(fd uintptr) {
		if waitTo > waitFrom {
			_ = unix.SyncFileRange(int(fd), waitFrom, waitTo-waitFrom, unix.SYNC_FILE_RANGE_WAIT_BEFORE)
		}
		if e := unix.SyncFileRange(int(fd), from, to-from, unix.SYNC_FILE_RANGE_WRITE); e != nil {
			w.broken = true
		}
	})
	w.prev, w.started = from, to
}
