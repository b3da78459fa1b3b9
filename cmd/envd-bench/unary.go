package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/process"
)

// localServer is the in-process floor of issue 16: a GET to a trivial
// net/http server inside this very process. Unlike the separate trivial
// server it costs no second process's wakeup, so the gap between the two is
// what any out-of-process daemon pays on this machine before doing any work.
type localServer struct {
	srv *http.Server
	url string
}

func startLocal() (*localServer, error) {
	// Plain TCP, as the trivial server (built for go 1.22) and envd listen.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rt", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s := &localServer{srv: &http.Server{Handler: mux}, url: "http://" + ln.Addr().String()}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *localServer) close() { _ = s.srv.Close() }

// getOK does a GET and checks it answers 200 with want (if not nil).
func (b *bench) getOK(ctx context.Context, url string, hdr http.Header, want []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
	if want != nil && !bytes.Equal(body, want) {
		return fmt.Errorf("GET %s: %d bytes differ from the %d expected", url, len(body), len(want))
	}
	return nil
}

// unaryOp is one small call measured against the floors.
type unaryOp struct {
	name string
	prep func(ctx context.Context) (cleanup func(), err error)
	call func(ctx context.Context, i int) error
	// ref, if set, is the same work done by the trivial server, measured
	// in the same loop and printed beside the floors.
	ref     func(ctx context.Context) error
	refName string
}

// unaryLatency measures unary calls and first events, each interleaved with
// the in-process floor and the separate-process trivial server in the same
// loop, so machine load hits all three alike. Ratios are to the in-process
// floor (issue 16's target: ≤ 2.5×).
func (b *bench) unaryLatency(ctx context.Context) []row {
	local, err := startLocal()
	if err != nil {
		return []row{errRow("in-process GET floor", target{}, err)}
	}
	defer local.close()

	const rangeSize = 64 << 10
	rangeFile := b.path("range.bin")
	rangeLen := int64(16 << 20)
	if b.opt.short {
		rangeLen = 1 << 20
	}
	statFile := b.path("unary-stat.txt")
	var ptyPID uint32
	rng := rand.New(rand.NewPCG(1, 6))
	ops := []unaryOp{
		{name: "GET /health", call: func(ctx context.Context, _ int) error {
			return b.getOK(ctx, b.base+"/health", nil, nil)
		}},
		{name: "Stat RPC", prep: func(context.Context) (func(), error) {
			return func() { os.Remove(statFile) }, os.WriteFile(statFile, []byte("hello"), 0o644)
		}, call: func(ctx context.Context, _ int) error {
			resp, err := b.fs.Stat(ctx, &filesystem.StatRequest{Path: statFile})
			if err == nil && resp.GetEntry().GetSize() != 5 {
				err = fmt.Errorf("Stat answered %v, want 5 bytes", resp.GetEntry())
			}
			return err
		}},
		{name: "Process.List RPC", call: func(ctx context.Context, _ int) error {
			_, err := b.proc.List(ctx, &process.ListRequest{})
			return err
		}},
		{name: fmt.Sprintf("Range GET of %s at a random offset", fmtBytes(rangeSize)), prep: func(context.Context) (func(), error) {
			return func() { os.Remove(rangeFile) }, fixture(rangeFile, b.data[:rangeLen], rangeLen)
		}, call: func(ctx context.Context, _ int) error {
			off := rng.Int64N(rangeLen - rangeSize)
			h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+rangeSize-1)}}
			return b.getOK(ctx, b.filesURL(rangeFile), h, b.data[off:off+rangeSize])
		}, refName: "trivial server's ServeContent", ref: func(ctx context.Context) error {
			off := rng.Int64N(rangeLen - rangeSize)
			h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+rangeSize-1)}}
			return b.getOK(ctx, b.triv.url+"/download?path="+url.QueryEscape(rangeFile), h, b.data[off:off+rangeSize])
		}},
		{name: "WatchDir → start event", prep: func(context.Context) (func(), error) {
			d := b.path("unary-watch")
			_ = os.RemoveAll(d)
			return func() { os.RemoveAll(d) }, os.Mkdir(d, 0o755)
		}, call: func(ctx context.Context, _ int) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := b.fs.WatchDir(ctx, &filesystem.WatchDirRequest{Path: b.path("unary-watch")})
			if err != nil {
				return err
			}
			defer stream.Close()
			if !stream.Receive() || stream.Msg().GetStart() == nil {
				return fmt.Errorf("WatchDir: no start event first: %v", stream.Err())
			}
			return nil
		}},
		{name: "Process.Connect to a running PTY → first event", prep: func(ctx context.Context) (func(), error) {
			req := startReq("/bin/cat")
			req.Pty = &process.PTY{Size: &process.PTY_Size{Cols: 80, Rows: 24}}
			pid, err := b.startBackgroundReq(ctx, req)
			ptyPID = pid
			return func() {
				_, _ = b.proc.SendSignal(context.Background(), connectReqSignal(pid))
			}, err
		}, call: func(ctx context.Context, _ int) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := b.proc.Connect(ctx, &process.ConnectRequest{Process: pidSel(ptyPID)})
			if err != nil {
				return err
			}
			defer stream.Close()
			if !stream.Receive() {
				return fmt.Errorf("Connect: no first event: %v", stream.Err())
			}
			if s := stream.Msg().GetEvent().GetStart(); s == nil || s.GetPid() != ptyPID {
				return fmt.Errorf("Connect: first event %v, want start of %d", stream.Msg().GetEvent(), ptyPID)
			}
			return nil
		}},
	}

	n := b.sz.iters * 5
	const warm = 20
	var inproc, separate durations
	var rows []row
	t := atMost(2.5)
	for _, op := range ops {
		if op.prep != nil {
			cleanup, err := op.prep(ctx)
			if cleanup != nil {
				defer cleanup()
			}
			if err != nil {
				rows = append(rows, errRow(op.name, t, err))
				continue
			}
		}
		var envd, lin, lsep, lref durations
		var opErr error
		for i := range n + warm {
			if op.ref != nil {
				t0 := time.Now()
				if err := op.ref(ctx); err != nil {
					opErr = fmt.Errorf("%s: %w", op.refName, err)
					break
				}
				if i >= warm {
					lref = append(lref, time.Since(t0))
				}
			}
			t0 := time.Now()
			err := b.getOK(ctx, local.url+"/rt", nil, []byte("ok"))
			d1 := time.Since(t0)
			if err != nil {
				opErr = fmt.Errorf("in-process floor: %w", err)
				break
			}
			t0 = time.Now()
			err = b.getOK(ctx, b.triv.url+"/rt", nil, []byte("ok"))
			d2 := time.Since(t0)
			if err != nil {
				opErr = fmt.Errorf("trivial server: %w", err)
				break
			}
			t0 = time.Now()
			err = op.call(ctx, i)
			d3 := time.Since(t0)
			if err != nil {
				opErr = err
				break
			}
			if i >= warm {
				lin, lsep, envd = append(lin, d1), append(lsep, d2), append(envd, d3)
			}
		}
		if opErr != nil {
			rows = append(rows, errRow(op.name, t, opErr))
			continue
		}
		inproc, separate = append(inproc, lin...), append(separate, lsep...)
		r := row{name: op.name, envd: fmtLatency(envd),
			limit: fmt.Sprintf("%s in-process GET (separate process %s, %.2f×)", fmtDur(lin.median()), fmtDur(lsep.median()),
				float64(envd.median())/float64(lsep.median())),
			target: t}
		if op.ref != nil {
			r.limit += fmt.Sprintf("; %s %s, %.2f×", op.refName, fmtDur(lref.median()), float64(envd.median())/float64(lref.median()))
		}
		r.judge(float64(envd.median()), float64(lin.median()))
		rows = append(rows, r)
	}
	if len(inproc) > 0 {
		r := row{name: "GET to a trivial server in a separate process", envd: fmtLatency(separate),
			limit: fmtLatency(inproc) + " in-process GET", note: "the cost of a second process on this machine, for scale"}
		r.judge(float64(separate.median()), float64(inproc.median()))
		rows = append(rows, r)
	}
	return rows
}

func connectReqSignal(pid uint32) *process.SendSignalRequest {
	return &process.SendSignalRequest{Process: pidSel(pid), Signal: process.Signal_SIGNAL_SIGKILL}
}

// startBackgroundReq is startBackground for any StartRequest.
func (b *bench) startBackgroundReq(ctx context.Context, req *process.StartRequest) (uint32, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := b.proc.Start(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("Start: %w", err)
	}
	defer stream.Close()
	for stream.Receive() {
		if s := stream.Msg().GetEvent().GetStart(); s != nil {
			return s.GetPid(), nil
		}
	}
	return 0, fmt.Errorf("Start stream ended before the start event: %v", stream.Err())
}

// writeFsync is the floor of a durable upload: the same bytes written to a
// new file on the same filesystem in 1 MiB writes, then fsync.
func writeFsync(path string, data []byte) (time.Duration, error) {
	t0 := time.Now()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, err
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := f.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			f.Close()
			return 0, err
		}
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return time.Since(t0), err
}

// durableUpload compares envd's upload, which reaches the disk before it
// answers, with the disk's own write+fsync of the same bytes, and with the
// same multipart body POSTed to a trivial server that does not fsync (what
// E2B's envd does). Runs alternate.
func (b *bench) durableUpload(ctx context.Context) []row {
	n := b.sz.upload
	name := fmt.Sprintf("upload %s multipart, durable", fmtBytes(n))
	t := atLeast(0.8)
	data := b.data[:n]
	var envd, floor, nosync rates
	for range b.sz.reps * 5 / 3 {
		fp, ep, tp := b.path("fsync-floor.bin"), b.path("durable-upload.bin"), b.path("nosync-upload.bin")
		quiesce(fp, ep, tp)
		df, err := writeFsync(fp, data)
		if err == nil {
			err = checkFile(fp, data, n)
		}
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("floor: %w", err))}
		}
		quiesce(fp, ep, tp)
		t0 := time.Now()
		err = b.postTrivial(ctx, tp, data)
		dt := time.Since(t0)
		if err == nil {
			err = checkFile(tp, data, n)
		}
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("trivial server: %w", err))}
		}
		quiesce(fp, ep, tp)
		t0 = time.Now()
		err = b.uploadMultipart(ctx, ep, data)
		de := time.Since(t0)
		if err == nil {
			err = checkFile(ep, data, n)
		}
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		envd, floor, nosync = append(envd, float64(n)/de.Seconds()), append(floor, float64(n)/df.Seconds()), append(nosync, float64(n)/dt.Seconds())
	}
	quiesce(b.path("fsync-floor.bin"), b.path("durable-upload.bin"), b.path("nosync-upload.bin"))
	// The shared disk's speed drifts within a run, the floor's most: the
	// median of each repetition's own ratio is printed too.
	var ratios, vsNoSync rates
	for i := range envd {
		ratios, vsNoSync = append(ratios, envd[i]/floor[i]), append(vsNoSync, envd[i]/nosync[i])
	}
	r := row{name: name, envd: fmtRate(envd.median()),
		limit: fmt.Sprintf("%s disk write + fsync (per repetition %.2f×); %s POST to trivial server without fsync (%.2f×, per repetition %.2f×)",
			fmtRate(floor.median()), ratios.median(), fmtRate(nosync.median()), envd.median()/nosync.median(), vsNoSync.median()), target: t}
	r.judge(envd.median(), floor.median())
	return []row{r}
}

// uploadMultipart sends data as one multipart/form-data part, as the SDKs do.
func (b *bench) uploadMultipart(ctx context.Context, path string, data []byte) error {
	const boundary = "envdbenchboundary7f3a"
	head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + "upload.bin" +
		"\"\r\nContent-Type: application/octet-stream\r\n\r\n"
	tail := "\r\n--" + boundary + "--\r\n"
	body := io.MultiReader(strings.NewReader(head), bytes.NewReader(data), strings.NewReader(tail))
	msg, err := b.postFiles(ctx, path, body, int64(len(head)+len(data)+len(tail)), "multipart/form-data; boundary="+boundary)
	if err != nil {
		return err
	}
	if !bytes.Contains(msg, []byte(path)) {
		return fmt.Errorf("POST /files: answered %s, want an entry for %s", msg, path)
	}
	return nil
}

// idleThreads compares the threads of a freshly started envd, idle after
// its first /health, with the trivial server's.
func (b *bench) idleThreads(ctx context.Context) []row {
	name := "idle threads"
	t := target{lowerIsBetter, 0, "≤ 4"}
	if b.bin == "" {
		return []row{{name: name, target: t, met: "n/a", note: "only when envd-bench starts the binary itself (no -url)"}}
	}
	count := func(bin string, args func(int) []string) ([]float64, error) {
		var out []float64
		for range max(2, b.sz.spawns) {
			s, err := spawn(ctx, bin, args, b.tmp)
			if err != nil {
				return nil, err
			}
			time.Sleep(300 * time.Millisecond)
			th, err := procStatusLine(s.pid(), "Threads")
			var k float64
			if err == nil {
				_, err = fmt.Sscan(th, &k)
			}
			if serr := s.stop(); err == nil {
				err = serr
			}
			if err != nil {
				return nil, err
			}
			out = append(out, k)
		}
		return out, nil
	}
	tv, err := count(b.trivBin, func(p int) []string { return []string{fmt.Sprint(p)} })
	if err != nil {
		return []row{errRow(name, t, fmt.Errorf("trivial server: %w", err))}
	}
	ev, err := count(b.bin, envdArgs)
	if err != nil {
		return []row{errRow(name, t, err)}
	}
	r := row{name: name, envd: fmt.Sprintf("%.0f", rates(ev).median()), limit: fmt.Sprintf("%.0f trivial Go HTTP server", rates(tv).median()), target: t}
	r.judge(rates(ev).median(), rates(tv).median())
	r.met = "NO"
	if rates(ev).median() <= 4 {
		r.met = "yes"
	}
	return []row{r}
}
