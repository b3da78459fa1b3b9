// Package memcollapse compacts envd's own anonymous memory into 2 MiB
// transparent hugepages before a pause (§18.4): after a cold resume every
// page is a fault served from the snapshot file, and one hugepage is one
// fault where 512 small pages were 512.
package memcollapse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/cgroup"
)

const hugePage = 2 << 20

// Result is the CollapseResult of §18.4; Chunks = Collapsed + AlreadyHuge + Skipped.
type Result struct {
	Regions     int // anonymous read-write mappings scanned
	Chunks      int // 2 MiB windows tried
	Collapsed   int
	AlreadyHuge int
	Skipped     int // windows madvise refused
	Elapsed     time.Duration
}

// Collapser works on the process whose /proc directory is ProcSelf, which
// must be the calling process: madvise acts on the caller's memory.
type Collapser struct {
	ProcSelf string // "/proc/self"
	// beforeChunk runs before each MADV_COLLAPSE; tests cancel from it.
	beforeChunk func()
}

type region struct{ start, end uintptr }

// Collapse runs once over the current mappings. It stops with an error when
// ctx ends; the windows collapsed so far stay collapsed.
func (c *Collapser) Collapse(ctx context.Context) (Result, error) {
	start := time.Now()
	maps, err := os.ReadFile(filepath.Join(c.ProcSelf, "maps"))
	if err != nil {
		return Result{}, fmt.Errorf("read maps: %w", err)
	}
	regions, err := anonRegions(maps)
	if err != nil {
		return Result{}, err
	}
	before, beforeOK := c.anonHuge()
	res := Result{Regions: len(regions)}
	ok := 0
	for _, r := range regions {
		// Errors ignored: without the hint MADV_COLLAPSE may still work.
		_ = madvise(r.start, r.end-r.start, unix.MADV_HUGEPAGE)
		for w := (r.start + hugePage - 1) &^ (hugePage - 1); w+hugePage <= r.end; w += hugePage {
			if c.beforeChunk != nil {
				c.beforeChunk()
			}
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("collapse cancelled: %w", err)
			}
			res.Chunks++
			if madvise(w, hugePage, unix.MADV_COLLAPSE) == nil {
				ok++
			} else {
				res.Skipped++
			}
		}
	}
	after, afterOK := c.anonHuge()
	// A success on a window that was already huge adds nothing to
	// AnonHugePages, which tells the two apart.
	res.Collapsed = ok
	if beforeOK && afterOK && after >= before {
		res.Collapsed = min(int((after-before)/hugePage), ok)
	}
	res.AlreadyHuge = ok - res.Collapsed
	res.Elapsed = time.Since(start)
	return res, nil
}

// anonHuge is AnonHugePages of smaps_rollup, in bytes.
func (c *Collapser) anonHuge() (int64, bool) {
	b, err := os.ReadFile(filepath.Join(c.ProcSelf, "smaps_rollup"))
	if err != nil {
		return 0, false
	}
	kb, err := cgroup.ParseKeyed(b, "AnonHugePages")
	if err != nil {
		return 0, false
	}
	return int64(kb) * 1024, true
}

// anonRegions keeps the readable, writable mappings without a pathname:
// the heap Go maps itself, not [heap], [stack] or files.
func anonRegions(maps []byte) ([]region, error) {
	var out []region
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		if len(f) > 5 || len(f[1]) < 2 || f[1][0] != 'r' || f[1][1] != 'w' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, errors.New("parse maps: bad range " + f[0])
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || e < s {
			return nil, errors.New("parse maps: bad range " + f[0])
		}
		out = append(out, region{uintptr(s), uintptr(e)})
	}
	return out, sc.Err()
}

func madvise(addr, length uintptr, advice int) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice)); errno != 0 {
		return errno
	}
	return nil
}
