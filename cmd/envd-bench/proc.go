package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"google.golang.org/protobuf/proto"

	"github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

func startReq(cmd string, args ...string) *process.StartRequest {
	return &process.StartRequest{Process: &process.ProcessConfig{Cmd: cmd, Args: args}, Stdin: proto.Bool(false)}
}

func pidSel(pid uint32) *process.ProcessSelector {
	return &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}}
}

type runResult struct {
	pid    uint32
	end    *process.ProcessEvent_EndEvent
	out    int64
	stderr []byte // first KiB, for error messages
}

// ok fails unless the process exited with status 0.
func (r runResult) ok() error {
	if !r.end.GetExited() || r.end.GetExitCode() != 0 {
		return fmt.Errorf("process ended with %q (exit code %d), stderr %q", r.end.GetStatus(), r.end.GetExitCode(), r.stderr)
	}
	return nil
}

// startRun calls Start and consumes the stream to its end: stdout or pty data
// go to out, started gets the pid of the start event.
func (b *bench) startRun(ctx context.Context, req *process.StartRequest, out io.Writer, started func(pid uint32)) (runResult, error) {
	return startWith(ctx, b.proc, req, out, started)
}

func startWith(ctx context.Context, client processconnect.ProcessClient, req *process.StartRequest, out io.Writer, started func(pid uint32)) (runResult, error) {
	var res runResult
	stream, err := client.Start(ctx, req)
	if err != nil {
		return res, fmt.Errorf("Start: %w", err)
	}
	defer stream.Close()
	for stream.Receive() {
		switch e := stream.Msg().GetEvent().GetEvent().(type) {
		case *process.ProcessEvent_Start:
			res.pid = e.Start.GetPid()
			if started != nil {
				started(res.pid)
			}
		case *process.ProcessEvent_Data:
			var p []byte
			switch o := e.Data.GetOutput().(type) {
			case *process.ProcessEvent_DataEvent_Stdout:
				p = o.Stdout
			case *process.ProcessEvent_DataEvent_Pty:
				p = o.Pty
			case *process.ProcessEvent_DataEvent_Stderr:
				if len(res.stderr) < 1024 {
					res.stderr = append(res.stderr, o.Stderr[:min(len(o.Stderr), 1024-len(res.stderr))]...)
				}
			}
			res.out += int64(len(p))
			if out != nil && len(p) > 0 {
				_, _ = out.Write(p)
			}
		case *process.ProcessEvent_End:
			res.end = e.End
		}
	}
	if err := stream.Err(); err != nil {
		return res, fmt.Errorf("Start stream: %w", err)
	}
	if res.end == nil {
		return res, errors.New("Start stream closed without an end event")
	}
	return res, nil
}

// parallel runs f(0..n-1) concurrently and returns the first error.
func parallel(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (b *bench) startTrue(ctx context.Context) []row {
	name := "Start /bin/true → end event"
	t := atMost(2)
	var envd, limit durations
	const warm = 3
	for i := range b.sz.iters + warm {
		t0 := time.Now()
		if err := exec.CommandContext(ctx, "/bin/true").Run(); err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		dl := time.Since(t0)
		t0 = time.Now()
		res, err := b.startRun(ctx, startReq("/bin/true"), nil, nil)
		de := time.Since(t0)
		if err == nil {
			err = res.ok()
		}
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		if i >= warm {
			envd, limit = append(envd, de), append(limit, dl)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " fork+exec+wait", target: t}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

func (b *bench) concurrentSleep(ctx context.Context) []row {
	n := b.sz.concurrent
	name := fmt.Sprintf("%d concurrent `sleep 0.1`", n)
	t := atMost(1.5)
	var envd, limit durations
	for i := range b.sz.reps + 1 {
		t0 := time.Now()
		err := parallel(n, func(int) error { return exec.CommandContext(ctx, "sleep", "0.1").Run() })
		dl := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		t0 = time.Now()
		err = parallel(n, func(int) error {
			res, err := b.startRun(ctx, startReq("sleep", "0.1"), nil, nil)
			if err == nil {
				err = res.ok()
			}
			return err
		})
		de := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		if i > 0 {
			envd, limit = append(envd, de), append(limit, dl)
		}
	}
	r := row{name: name, envd: fmtLatency(envd) + " all ended", limit: fmtLatency(limit) + " from Go", target: t}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

// readPipe is the limit for stdout: Go reading head's stdout from a pipe.
func readPipe(ctx context.Context, n int64, w io.Writer) (time.Duration, time.Duration, error) {
	cmd := exec.CommandContext(ctx, "head", "-c", fmt.Sprint(n), "/dev/zero")
	p, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	cpu0 := selfCPU()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	_, err = io.CopyBuffer(w, p, make([]byte, 64<<10))
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	return time.Since(t0), selfCPU() - cpu0, err
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (b *bench) stdoutStream(ctx context.Context) []row {
	n := b.sz.stdout
	name := fmt.Sprintf("stdout stream of `head -c %s /dev/zero`", strings.ReplaceAll(fmtBytes(n), " ", ""))
	cpuName := "daemon CPU per GiB of stdout"
	t, tc := atLeast(0.6), atMost(2)
	var envd, limit rates
	var envdCPU, limitCPU, clientCPU, plain, plainCPU []float64
	var plainErr error
	gib := float64(n) / (1 << 30)
	for range b.sz.reps {
		v := newVerifier(zeroPattern())
		dl, _, err := readPipe(ctx, n, v)
		if err == nil {
			err = v.check(n)
		}
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		// CPU of reading alone, without the check the throughput run does.
		_, cl, err := readPipe(ctx, n, io.Discard)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		v = newVerifier(zeroPattern())
		c0, cerr := b.daemonCPU()
		s0 := selfCPU()
		t0 := time.Now()
		res, err := b.startRun(ctx, startReq("head", "-c", fmt.Sprint(n), "/dev/zero"), v, nil)
		de := time.Since(t0)
		c1, cerr1 := b.daemonCPU()
		clientCPU = append(clientCPU, (selfCPU()-s0).Seconds()/gib)
		if err == nil {
			err = errors.Join(res.ok(), v.check(n))
		}
		if err != nil {
			return []row{errRow(name, t, err), errRow(cpuName, tc, err)}
		}
		envd, limit = append(envd, float64(n)/de.Seconds()), append(limit, float64(n)/dl.Seconds())
		limitCPU = append(limitCPU, cl.Seconds()/gib)
		if cerr == nil && cerr1 == nil {
			envdCPU = append(envdCPU, (c1-c0).Seconds()/gib)
		}
		if b.opt.rpcGzip && plainErr == nil {
			v = newVerifier(zeroPattern())
			c0, cerr := b.daemonCPU()
			t0 := time.Now()
			res, err := startWith(ctx, b.procPlain, startReq("head", "-c", fmt.Sprint(n), "/dev/zero"), v, nil)
			d := time.Since(t0)
			c1, cerr1 := b.daemonCPU()
			if err == nil {
				err = errors.Join(res.ok(), v.check(n))
			}
			plainErr = err
			plain = append(plain, float64(n)/d.Seconds())
			if cerr == nil && cerr1 == nil {
				plainCPU = append(plainCPU, (c1-c0).Seconds()/gib)
			}
		}
	}
	r := row{name: name, envd: fmtRate(envd.median()), limit: fmtRate(limit.median()) + " Go reading a pipe", target: t}
	r.judge(envd.median(), limit.median())
	rc := row{name: cpuName, limit: fmt.Sprintf("%.2f s Go reading a pipe", rates(limitCPU).median()), target: tc}
	if len(envdCPU) == 0 {
		rc.err = errors.New("daemon pid unknown (pass -pid with -url)")
	} else {
		rc.envd = fmt.Sprintf("%.2f s", rates(envdCPU).median())
		rc.judge(rates(envdCPU).median(), rates(limitCPU).median())
		rc.note = fmt.Sprintf("for scale: this benchmark's own client (Connect decode + content check) used %.2f s per GiB", rates(clientCPU).median())
		if b.opt.short {
			rc.note += "; CPU time is counted in 10 ms ticks, meaningless at -short sizes"
		}
	}
	rows := []row{r, rc}
	if b.opt.rpcGzip {
		pn := name + " — client not accepting gzip"
		if plainErr != nil {
			return append(rows, errRow(pn, t, plainErr))
		}
		rp := row{name: pn, envd: fmtRate(rates(plain).median()), limit: fmtRate(limit.median()) + " Go reading a pipe", target: t}
		rp.judge(rates(plain).median(), limit.median())
		if len(plainCPU) > 0 {
			rp.note = fmt.Sprintf("daemon CPU %.2f s per GiB (%.2f× Go reading a pipe)", rates(plainCPU).median(), rates(plainCPU).median()/rates(limitCPU).median())
		}
		rows = append(rows, rp)
	}
	return rows
}

func (b *bench) daemonCPU() (time.Duration, error) {
	if b.pid == 0 {
		return 0, errors.New("daemon pid unknown")
	}
	return procCPU(b.pid)
}

// readPTY is the limit for PTY output: Go reading the master side.
func readPTY(ctx context.Context, n int64, w io.Writer) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, "head", "-c", fmt.Sprint(n), "/dev/zero")
	t0 := time.Now()
	m, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 24})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	_, err = io.CopyBuffer(w, m, make([]byte, 64<<10))
	// The master reads EIO once the last slave fd is closed: that is EOF.
	if errors.Is(err, syscall.EIO) {
		err = nil
	}
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	return time.Since(t0), err
}

func (b *bench) ptyStream(ctx context.Context) []row {
	n := b.sz.pty
	name := fmt.Sprintf("PTY output stream (%s)", fmtBytes(n))
	t := atLeast(0.9)
	var envd, limit rates
	for range b.sz.reps {
		v := newVerifier(zeroPattern())
		dl, err := readPTY(ctx, n, v)
		if err == nil {
			err = v.check(n)
		}
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		req := startReq("head", "-c", fmt.Sprint(n), "/dev/zero")
		req.Stdin = nil
		req.Pty = &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}}
		de, err := timedCheck(zeroPattern(), n, func(v *verifier) error {
			res, err := b.startRun(ctx, req, v, nil)
			if err != nil {
				return err
			}
			return res.ok()
		})
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		envd, limit = append(envd, float64(n)/de.Seconds()), append(limit, float64(n)/dl.Seconds())
	}
	r := row{name: name, envd: fmtRate(envd.median()), limit: fmtRate(limit.median()) + " Go reading a pty", target: t}
	r.judge(envd.median(), limit.median())
	return []row{r}
}

// writePipe is the limit for stdin: Go writing 64 KiB chunks into a pipe.
func writePipe(ctx context.Context, data []byte) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", "exec cat >/dev/null")
	p, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	for off := 0; off < len(data) && err == nil; off += 64 << 10 {
		_, err = p.Write(data[off:min(off+64<<10, len(data))])
	}
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	return time.Since(t0), err
}

// feeder writes data to the stdin of the process with pid.
type feeder func(ctx context.Context, pid uint32, data []byte) error

func (b *bench) streamInput(ctx context.Context, pid uint32, data []byte) error {
	s, err := b.proc.StreamInput(ctx)
	if err != nil {
		return fmt.Errorf("StreamInput: %w", err)
	}
	err = s.Send(&process.StreamInputRequest{Event: &process.StreamInputRequest_Start{
		Start: &process.StreamInputRequest_StartEvent{Process: pidSel(pid)}}})
	for off := 0; off < len(data) && err == nil; off += 64 << 10 {
		err = s.Send(&process.StreamInputRequest{Event: &process.StreamInputRequest_Data{
			Data: &process.StreamInputRequest_DataEvent{Input: &process.ProcessInput{
				Input: &process.ProcessInput_Stdin{Stdin: data[off:min(off+64<<10, len(data))]}}}}})
	}
	// Send reports io.EOF when the server ended the call; the reason is in CloseAndReceive.
	if _, cerr := s.CloseAndReceive(); cerr != nil {
		return fmt.Errorf("StreamInput: %w", cerr)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("StreamInput send: %w", err)
	}
	return nil
}

func (b *bench) sendInput(ctx context.Context, pid uint32, data []byte) error {
	for off := 0; off < len(data); off += 64 << 10 {
		_, err := b.proc.SendInput(ctx, &process.SendInputRequest{Process: pidSel(pid), Input: &process.ProcessInput{
			Input: &process.ProcessInput_Stdin{Stdin: data[off:min(off+64<<10, len(data))]}}})
		if err != nil {
			return fmt.Errorf("SendInput at byte %d: %w", off, err)
		}
	}
	return nil
}

// feedProcess starts `sh -c script` with stdin, feeds data through feed,
// closes stdin and waits for the end event. It returns the time from the
// start event to the end event and the process's stdout.
func (b *bench) feedProcess(ctx context.Context, script string, data []byte, feed feeder) (time.Duration, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := startReq("sh", "-c", script)
	req.Stdin = proto.Bool(true)
	pidc := make(chan uint32, 1)
	type result struct {
		res runResult
		err error
	}
	done := make(chan result, 1)
	var out strings.Builder
	go func() {
		res, err := b.startRun(ctx, req, &out, func(pid uint32) { pidc <- pid })
		done <- result{res, err}
	}()
	var pid uint32
	select {
	case pid = <-pidc:
	case r := <-done:
		return 0, "", fmt.Errorf("process ended before its start event: %v", r.err)
	}
	t0 := time.Now()
	if err := feed(ctx, pid, data); err != nil {
		return 0, "", err
	}
	if _, err := b.proc.CloseStdin(ctx, &process.CloseStdinRequest{Process: pidSel(pid)}); err != nil {
		return 0, "", fmt.Errorf("CloseStdin: %w", err)
	}
	r := <-done
	d := time.Since(t0)
	if r.err == nil {
		r.err = r.res.ok()
	}
	return d, out.String(), r.err
}

// checkInput pipes data through sha256sum with feed and compares digests, so
// the stdin paths are checked for content, not only for speed.
func (b *bench) checkInput(ctx context.Context, feed feeder, data []byte) error {
	_, out, err := b.feedProcess(ctx, "exec sha256sum", data, feed)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	if got, _, _ := strings.Cut(out, " "); got != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("stdin content mismatch: sha256sum in the process printed %q, sent %x", out, sum)
	}
	return nil
}

func (b *bench) stdinStream(ctx context.Context) []row {
	nameS := fmt.Sprintf("StreamInput %s into `cat >/dev/null`", fmtBytes(b.sz.streamIn))
	nameU := "SendInput, 64 KiB per call"
	tS, tU := atLeast(0.5), atLeast(0.1)
	var envdS, envdU, limitS, limitU rates
	var errS, errU error
	for range b.sz.reps {
		for _, c := range []struct {
			n     int64
			feed  feeder
			envd  *rates
			limit *rates
			err   *error
		}{{b.sz.streamIn, b.streamInput, &envdS, &limitS, &errS}, {b.sz.sendIn, b.sendInput, &envdU, &limitU, &errU}} {
			if *c.err != nil {
				continue
			}
			data := b.data[:c.n]
			dl, err := writePipe(ctx, data)
			if err != nil {
				*c.err = fmt.Errorf("limit: %w", err)
				continue
			}
			de, _, err := b.feedProcess(ctx, "exec cat >/dev/null", data, c.feed)
			if err != nil {
				*c.err = err
				continue
			}
			*c.envd, *c.limit = append(*c.envd, float64(c.n)/de.Seconds()), append(*c.limit, float64(c.n)/dl.Seconds())
		}
	}
	if errS == nil {
		errS = b.checkInput(ctx, b.streamInput, b.data[:b.sz.checkIn])
	}
	if errU == nil {
		errU = b.checkInput(ctx, b.sendInput, b.data[:b.sz.checkIn])
	}
	var rows []row
	for _, c := range []struct {
		name        string
		t           target
		envd, limit rates
		err         error
	}{{nameS, tS, envdS, limitS, errS}, {nameU, tU, envdU, limitU, errU}} {
		if c.err != nil {
			rows = append(rows, errRow(c.name, c.t, c.err))
			continue
		}
		r := row{name: c.name, envd: fmtRate(c.envd.median()), limit: fmtRate(c.limit.median()) + " Go writing a pipe", target: c.t}
		r.judge(c.envd.median(), c.limit.median())
		rows = append(rows, r)
	}
	return rows
}
