package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/envd-dev/envd/internal/gen/process"
)

// slowReader streams stdout to a client that reads slower than the process
// writes, and reports the daemon's peak RSS: a daemon that buffers instead
// of applying back-pressure grows with the output.
func (b *bench) slowReader(ctx context.Context) []row {
	n := b.sz.slowRead
	name := fmt.Sprintf("peak daemon RSS while a slow client reads %.0f MB", float64(n)/1e6)
	t := target{text: "≤ 32 MiB"}
	if b.pid == 0 {
		return []row{errRow(name, t, errors.New("daemon pid unknown (pass -pid with -url)"))}
	}
	note, err := b.freshDaemon(ctx)
	if err != nil {
		return []row{errRow(name, t, err)}
	}
	if err := resetPeakRSS(b.pid); err != nil {
		note = fmt.Sprintf("could not reset VmHWM (%v): peak is since daemon start", err)
	}
	var sampled atomic.Int64
	stop := make(chan struct{})
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := procStatus(b.pid, "VmRSS"); err == nil && rss > sampled.Load() {
				sampled.Store(rss)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	v := newVerifier(zeroPattern())
	slow := &throttled{w: v, rate: b.sz.slowRate, start: time.Now()}
	t0 := time.Now()
	res, err := b.startRun(ctx, startReq("head", "-c", fmt.Sprint(n), "/dev/zero"), slow, nil)
	d := time.Since(t0)
	close(stop)
	<-sampler
	if err == nil {
		err = errors.Join(res.ok(), v.check(n))
	}
	if err != nil {
		return []row{errRow(name, t, err)}
	}
	hwm, err := procStatus(b.pid, "VmHWM")
	if err != nil {
		return []row{errRow(name, t, err)}
	}
	peak := max(hwm, sampled.Load())
	r := row{name: name, envd: fmt.Sprintf("%.1f MiB (read at %s)", float64(peak)/(1<<20), fmtRate(float64(n)/d.Seconds())),
		target: t, ratio: float64(peak) / (32 << 20), note: note}
	r.met = "yes"
	if peak > 32<<20 {
		r.met = "NO"
	}
	return []row{r}
}

// throttled passes writes on no faster than rate bytes per second; blocking
// in Write stops the client reading the stream, which is what a slow reader is.
type throttled struct {
	w     interface{ Write([]byte) (int, error) }
	rate  float64
	start time.Time
	n     int64
}

func (t *throttled) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	due := t.start.Add(time.Duration(float64(t.n) / t.rate * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait)
	}
	return t.w.Write(p)
}

// dropStreams has clients start a process that writes without pause, read a
// little and go away. The spec says a disconnect never kills the process, so
// every process must still be listed, and the daemon must still serve.
func (b *bench) dropStreams(ctx context.Context) []row {
	n := b.sz.drops
	name := fmt.Sprintf("%d clients drop a busy Start stream", n)
	t := target{text: "all survived, daemon healthy"}
	pids := make([]uint32, n)
	tags := make([]string, n)
	defer func() {
		for _, pid := range pids { // whatever happened, leave no `yes` behind
			if pid != 0 && alive(int(pid)) {
				_ = syscall.Kill(int(pid), syscall.SIGKILL)
			}
		}
	}()
	err := parallel(n, func(i int) error {
		tags[i] = fmt.Sprintf("envd-bench-drop-%d-%d", os.Getpid(), i)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req := startReq("yes", "envd-bench")
		req.Tag = &tags[i]
		stream, err := b.proc.Start(cctx, req)
		if err != nil {
			return fmt.Errorf("Start: %w", err)
		}
		var got int
		for got < 1<<20 && stream.Receive() {
			switch e := stream.Msg().GetEvent().GetEvent().(type) {
			case *process.ProcessEvent_Start:
				pids[i] = e.Start.GetPid()
			case *process.ProcessEvent_Data:
				got += len(e.Data.GetStdout())
			case *process.ProcessEvent_End:
				return fmt.Errorf("yes ended while streaming: %q", e.End.GetStatus())
			}
		}
		if got < 1<<20 {
			return fmt.Errorf("stream ended after %d bytes: %v", got, stream.Err())
		}
		cancel() // drop the stream mid-flight, without closing it first
		return nil
	})
	if err != nil {
		return []row{errRow(name, t, err)}
	}
	time.Sleep(500 * time.Millisecond) // let the daemon notice the disconnects
	var problems []error
	if b.pid != 0 && !alive(b.pid) {
		problems = append(problems, errors.New("daemon process is gone"))
	}
	if err := b.health(ctx); err != nil {
		problems = append(problems, err)
	}
	list, err := b.proc.List(ctx, &process.ListRequest{})
	survived := 0
	if err != nil {
		problems = append(problems, fmt.Errorf("List: %w", err))
	} else {
		for _, p := range list.GetProcesses() {
			if slices.Contains(tags, p.GetTag()) && alive(int(p.GetPid())) {
				survived++
			}
		}
	}
	res, err := b.startRun(ctx, startReq("echo", "still-serving"), nil, nil)
	if err == nil {
		err = res.ok()
	}
	if err != nil {
		problems = append(problems, fmt.Errorf("a new Start after the drops: %w", err))
	}
	for _, tag := range tags {
		_, err := b.proc.SendSignal(ctx, &process.SendSignalRequest{
			Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Tag{Tag: tag}}, Signal: process.Signal_SIGNAL_SIGKILL})
		if err != nil {
			problems = append(problems, fmt.Errorf("SendSignal SIGKILL to %s: %w", tag, err))
			break
		}
	}
	r := row{name: name, envd: fmt.Sprintf("%d/%d processes survived", survived, n), target: t, ratio: float64(survived) / float64(n)}
	r.met = "yes"
	if survived < n || len(problems) > 0 {
		r.met = "NO"
		if len(problems) > 0 {
			r.note = errors.Join(problems...).Error()
		}
	}
	return []row{r}
}

func (b *bench) health(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/health", nil)
	resp, err := b.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET /health: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /health: %s", resp.Status)
	}
	return nil
}

// footprint compares envd with the trivial Go HTTP server: RSS when idle
// after its first /health, binary size, and time from fork to healthy.
func (b *bench) footprint(ctx context.Context) []row {
	names := []string{"idle RSS", "binary size", "spawn → healthy"}
	ts := []target{atMost(1.25), atMost(1.25), atMost(1.3)}
	if b.bin == "" {
		var rows []row
		for i := range names {
			rows = append(rows, row{name: names[i], target: ts[i], met: "n/a", note: "only when envd-bench starts the binary itself (no -url)"})
			rows[i].judge(0, 0)
		}
		// The size of any implementation can still be compared through its pid.
		es, err1 := os.Stat(fmt.Sprintf("/proc/%d/exe", b.pid))
		tsz, err2 := os.Stat(b.trivBin)
		if b.pid != 0 && err1 == nil && err2 == nil {
			rows[1] = row{name: names[1], envd: fmtBytes(es.Size()), limit: fmtBytes(tsz.Size()) + " (static, stripped)", target: ts[1]}
			rows[1].judge(float64(es.Size()), float64(tsz.Size()))
		}
		return rows
	}
	measure := func(bin string, args func(int) []string) (durations, []float64, error) {
		var spawnT durations
		var rss []float64
		for range b.sz.spawns {
			s, err := spawn(ctx, bin, args, b.tmp)
			if err != nil {
				return nil, nil, err
			}
			time.Sleep(300 * time.Millisecond) // settle: let start-up goroutines finish
			r, err := procStatus(s.pid(), "VmRSS")
			if serr := s.stop(); err == nil {
				err = serr
			}
			if err != nil {
				return nil, nil, err
			}
			spawnT, rss = append(spawnT, s.healthy), append(rss, float64(r))
		}
		return spawnT, rss, nil
	}
	var rows []row
	var envdT, trivT durations
	var envdRSS, trivRSS []float64
	var err error
	// Alternate so drift on a shared machine hits both alike.
	for range 2 {
		var t1, t2 durations
		var r1, r2 []float64
		if t1, r1, err = measure(b.trivBin, func(p int) []string { return []string{fmt.Sprint(p)} }); err != nil {
			err = fmt.Errorf("trivial server: %w", err)
			break
		}
		if t2, r2, err = measure(b.bin, envdArgs); err != nil {
			break
		}
		trivT, trivRSS = append(trivT, t1...), append(trivRSS, r1...)
		envdT, envdRSS = append(envdT, t2...), append(envdRSS, r2...)
	}
	if err != nil {
		rows = append(rows, errRow(names[0], ts[0], err))
	} else {
		r := row{name: names[0], envd: fmt.Sprintf("%.1f MiB", rates(envdRSS).median()/(1<<20)),
			limit: fmt.Sprintf("%.1f MiB trivial Go HTTP server", rates(trivRSS).median()/(1<<20)), target: ts[0]}
		r.judge(rates(envdRSS).median(), rates(trivRSS).median())
		rows = append(rows, r)
	}
	es, err1 := os.Stat(b.bin)
	tsz, err2 := os.Stat(b.trivBin)
	if err := errors.Join(err1, err2); err != nil {
		rows = append(rows, errRow(names[1], ts[1], err))
	} else {
		r := row{name: names[1], envd: fmtBytes(es.Size()), limit: fmtBytes(tsz.Size()) + " (same build flags)", target: ts[1]}
		r.judge(float64(es.Size()), float64(tsz.Size()))
		rows = append(rows, r)
	}
	if err != nil {
		rows = append(rows, errRow(names[2], ts[2], err))
	} else {
		r := row{name: names[2], envd: fmtLatency(envdT), limit: fmtLatency(trivT), target: ts[2]}
		r.judge(float64(envdT.median()), float64(trivT.median()))
		rows = append(rows, r)
	}
	return rows
}
