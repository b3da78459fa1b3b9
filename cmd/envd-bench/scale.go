package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envd-dev/envd/internal/gen/process"
)

// scaleRow is one step of a growth measurement.
type scaleRow struct {
	name    string
	size    string
	time    string
	perUnit string
	memory  string
	err     error
}

type scaleScenario struct {
	name string
	run  func(ctx context.Context) []scaleRow
}

func (b *bench) scaleScenarios() []scaleScenario {
	return []scaleScenario{
		{"scale-list", b.scaleList},
		{"scale-streams", b.scaleStreams},
		{"scale-listdir", b.scaleListDir},
		{"scale-upload", b.scaleUpload},
	}
}

func (b *bench) runScale(s scaleScenario) (rows []scaleRow) {
	b.logf("scale %s", s.name)
	timeout := max(b.opt.timeout, 10*time.Minute)
	if b.opt.short {
		timeout = b.opt.timeout
	}
	ctx, cancel := budget(timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			rows = append(rows, scaleRow{name: s.name, err: fmt.Errorf("panic: %v", p)})
		}
	}()
	if note, err := b.freshDaemon(ctx); err != nil {
		return []scaleRow{{name: s.name, err: err}}
	} else if note != "" {
		b.logf("%s", note)
	}
	return s.run(ctx)
}

func printScale(w io.Writer, rows []scaleRow) {
	fmt.Fprintln(w, "| growth | size | time | per unit | daemon memory |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	var notes []string
	for i, r := range rows {
		t := r.time
		if r.err != nil {
			t = fmt.Sprintf("error [s%d]", i+1)
			notes = append(notes, fmt.Sprintf("[s%d] %s %s: %s", i+1, r.name, r.size, oneLine(r.err.Error())))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.name, r.size, orDash(t), orDash(r.perUnit), orDash(r.memory))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

// memNow is the daemon's current RSS, or "" when its pid is unknown.
func (b *bench) memNow() string {
	if b.pid == 0 {
		return ""
	}
	rss, err := procStatus(b.pid, "VmRSS")
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("RSS %.1f MiB", float64(rss)/(1<<20))
}

// peakSince resets the daemon's VmHWM; the returned func reads it.
func (b *bench) peakSince() func() string {
	if b.pid == 0 {
		return func() string { return "" }
	}
	if err := resetPeakRSS(b.pid); err != nil {
		return func() string { return "peak unknown: " + err.Error() }
	}
	return func() string {
		hwm, err := procStatus(b.pid, "VmHWM")
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("peak RSS %.1f MiB", float64(hwm)/(1<<20))
	}
}

// fdLimit describes the daemon's open-file limit, which bounds how many
// processes it can hold (a pipe end or two per process).
func (b *bench) fdLimit() string {
	if b.pid == 0 {
		return ""
	}
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", b.pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(lim), "\n") {
		if f := strings.Fields(l); len(f) >= 5 && strings.HasPrefix(l, "Max open files") {
			return "open-file limit " + f[3]
		}
	}
	return ""
}

// startBackground starts cmd and returns its pid once the start event came,
// dropping the stream as the Wrenn host agent's StartBackground does.
func (b *bench) startBackground(ctx context.Context, cmd string, args ...string) (uint32, error) {
	return b.startBackgroundReq(ctx, startReq(cmd, args...))
}

// workers runs f(i) for i in [0,n) on k goroutines.
func workers(n, k int, f func(i int) error) error {
	var next atomic.Int64
	return parallel(min(n, k), func(int) error {
		for {
			i := int(next.Add(1)) - 1
			if i >= n {
				return nil
			}
			if err := f(i); err != nil {
				return err
			}
		}
	})
}

func (b *bench) scaleList(ctx context.Context) []scaleRow {
	steps := []int{100, 1000, 5000, 10000}
	if b.opt.short {
		steps = []int{5, 20}
	}
	var pids []uint32
	defer func() {
		// SendSignal for every process is part of what is measured below;
		// this only catches what an error left behind.
		for _, pid := range pids {
			if alive(int(pid)) {
				_ = syscall.Kill(int(pid), syscall.SIGKILL)
			}
		}
	}()
	var rows []scaleRow
	for _, n := range steps {
		add := n - len(pids)
		got := make([]uint32, add)
		t0 := time.Now()
		err := workers(add, 16, func(i int) error {
			pid, err := b.startBackground(ctx, "sleep", "900")
			got[i] = pid
			return err
		})
		startT := time.Since(t0)
		for _, p := range got {
			if p != 0 {
				pids = append(pids, p)
			}
		}
		if err != nil {
			if lim := b.fdLimit(); lim != "" {
				err = fmt.Errorf("daemon's %s, %d processes running: %w", lim, len(pids), err)
			}
			rows = append(rows, scaleRow{name: "Start in background (16 clients)", size: fmt.Sprintf("%d more", add), err: err})
			if len(pids) <= n/2 {
				break
			}
			// Most did start: List is still worth measuring at what runs.
			n = len(pids)
		} else {
			rows = append(rows, scaleRow{name: "Start in background (16 clients)", size: fmt.Sprintf("%d more", add), time: fmtDur(startT),
				perUnit: fmtDur(startT/time.Duration(add)) + " per start", memory: b.memNow()})
		}
		var lat durations
		for range 5 {
			t0 := time.Now()
			resp, err := b.proc.List(ctx, &process.ListRequest{})
			lat = append(lat, time.Since(t0))
			if err != nil {
				return append(rows, scaleRow{name: "List with live processes", size: fmt.Sprint(n), err: fmt.Errorf("List: %w", err)})
			}
			if len(resp.GetProcesses()) < n {
				return append(rows, scaleRow{name: "List with live processes", size: fmt.Sprint(n),
					err: fmt.Errorf("List returned %d processes, %d are running", len(resp.GetProcesses()), n)})
			}
		}
		rows = append(rows, scaleRow{name: "List with live processes", size: fmt.Sprint(n), time: fmtLatency(lat),
			perUnit: fmtDur(lat.median()/time.Duration(n)) + " per process", memory: b.memNow()})
		if err != nil { // this step fell short; a bigger one would too
			break
		}
	}
	if len(pids) == 0 {
		return rows
	}
	t0 := time.Now()
	err := workers(len(pids), 16, func(i int) error {
		_, err := b.proc.SendSignal(ctx, &process.SendSignalRequest{Process: pidSel(pids[i]), Signal: process.Signal_SIGNAL_SIGKILL})
		return err
	})
	r := scaleRow{name: "SendSignal SIGKILL to all (16 clients)", size: fmt.Sprint(len(pids)), time: fmtDur(time.Since(t0)), err: err}
	if err == nil {
		r.perUnit = fmtDur(time.Since(t0)/time.Duration(len(pids))) + " per signal"
		r.memory = b.memNow()
	}
	return append(rows, r)
}

func (b *bench) scaleStreams(ctx context.Context) []scaleRow {
	steps, each := []int{10, 100, 1000}, int64(1<<20)
	if b.opt.short {
		steps, each = []int{2, 8}, 64<<10
	}
	var rows []scaleRow
	for _, n := range steps {
		peak := b.peakSince()
		per := make(durations, n)
		t0 := time.Now()
		err := parallel(n, func(i int) error {
			v := newVerifier(zeroPattern())
			s := time.Now()
			res, err := b.startRun(ctx, startReq("head", "-c", fmt.Sprint(each), "/dev/zero"), v, nil)
			per[i] = time.Since(s)
			if err == nil {
				err = errors.Join(res.ok(), v.check(each))
			}
			return err
		})
		d := time.Since(t0)
		name := fmt.Sprintf("concurrent stdout streams of %s", fmtBytes(each))
		if err != nil {
			rows = append(rows, scaleRow{name: name, size: fmt.Sprint(n), err: err})
			continue
		}
		rows = append(rows, scaleRow{name: name, size: fmt.Sprint(n),
			time:    fmt.Sprintf("%s all, per stream %s", fmtDur(d), fmtLatency(per)),
			perUnit: fmtRate(float64(each)*float64(n)/d.Seconds()) + " total", memory: peak()})
	}
	return rows
}

func (b *bench) scaleListDir(ctx context.Context) []scaleRow {
	steps := []int{1000, 10000, 100000}
	if b.opt.short {
		steps = []int{100, 1000}
	}
	var rows []scaleRow
	for _, n := range steps {
		dir := b.path(fmt.Sprintf("scale-list%d", n))
		if err := makeEntries(dir, n); err != nil {
			rows = append(rows, scaleRow{name: "ListDir", size: fmt.Sprint(n), err: fmt.Errorf("fixture: %w", err)})
			continue
		}
		peak := b.peakSince()
		var lat durations
		var err error
		for range 3 {
			var d time.Duration
			if d, err = b.listDirOnce(ctx, dir, n); err != nil {
				break
			}
			lat = append(lat, d)
		}
		mem := peak()
		os.RemoveAll(dir)
		if err != nil {
			rows = append(rows, scaleRow{name: "ListDir", size: fmt.Sprint(n), err: err})
			continue
		}
		rows = append(rows, scaleRow{name: "ListDir", size: fmt.Sprintf("%d entries", n), time: fmtLatency(lat),
			perUnit: fmtDur(lat.median()/time.Duration(n)) + " per entry", memory: mem})
	}
	return rows
}

// repeatReader yields pattern repeated to n bytes.
type repeatReader struct {
	pattern []byte
	n, off  int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	i := int(r.off % int64(len(r.pattern)))
	k := copy(p[:min(int64(len(p)), r.n-r.off)], r.pattern[i:])
	r.off += int64(k)
	return k, nil
}

func (b *bench) scaleUpload(ctx context.Context) []scaleRow {
	steps := []int64{256 << 20, 1 << 30, 4 << 30}
	if b.opt.short {
		steps = []int64{1 << 20, 4 << 20}
	}
	var rows []scaleRow
	for _, n := range steps {
		var st syscall.Statfs_t
		if err := syscall.Statfs(b.dir, &st); err != nil {
			rows = append(rows, scaleRow{name: "upload", size: fmtBytes(n), err: err})
			continue
		}
		if free := int64(st.Bavail) * st.Bsize; free < n+1<<30 {
			rows = append(rows, scaleRow{name: "upload", size: fmtBytes(n),
				err: fmt.Errorf("skipped: %s free on %s, need size + 1 GiB", fmtBytes(free), b.dir)})
			continue
		}
		p := b.path("scale-upload.bin")
		quiesce(p)
		peak := b.peakSince()
		t0 := time.Now()
		err := b.uploadFile(ctx, p, &repeatReader{pattern: b.data, n: n}, n)
		d := time.Since(t0)
		mem := peak()
		if err == nil {
			err = checkFile(p, b.data, n)
		}
		os.Remove(p)
		if err != nil {
			rows = append(rows, scaleRow{name: "upload", size: fmtBytes(n), err: err})
			continue
		}
		rows = append(rows, scaleRow{name: "upload", size: fmtBytes(n), time: fmtDur(d),
			perUnit: fmtRate(float64(n) / d.Seconds()), memory: mem})
	}
	return rows
}
