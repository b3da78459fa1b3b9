package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/gen/filesystem"
)

func (b *bench) path(name string) string { return filepath.Join(b.dir, name) }

func (b *bench) filesURL(path string) string {
	q := url.Values{"path": {path}}
	if b.opt.user != "" {
		q.Set("username", b.opt.user)
	}
	return b.base + "/files?" + q.Encode()
}

// uploadFile sends body as a raw octet-stream upload (§7.7) and checks the
// answer names the file.
func (b *bench) uploadFile(ctx context.Context, path string, body io.Reader, n int64) error {
	msg, err := b.postFiles(ctx, path, body, n, "application/octet-stream")
	if err != nil {
		return err
	}
	var entries []struct {
		Path string `json:"path"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(msg, &entries); err != nil {
		return fmt.Errorf("POST /files: decode %q: %w", msg, err)
	}
	if len(entries) != 1 || entries[0].Path != path {
		return fmt.Errorf("POST /files: answered %s, want one entry for %s", msg, path)
	}
	return nil
}

// postFiles POSTs an n-byte upload body to /files?path=path and returns
// the answer (its first 64 KiB), or an error unless it is 200.
func (b *bench) postFiles(ctx context.Context, path string, body io.Reader, n int64, contentType string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.filesURL(path), body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", contentType)
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST /files: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST /files: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return msg, nil
}

// checkFile compares a file on disk with pattern repeated to n bytes.
func checkFile(path string, pattern []byte, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	v := newVerifier(pattern)
	if _, err := io.CopyBuffer(v, f, make([]byte, 1<<20)); err != nil {
		return err
	}
	if err := v.check(n); err != nil {
		return fmt.Errorf("%s on disk: %w", path, err)
	}
	return nil
}

// postTrivial uploads to the reference server: the limit for uploads.
func (b *bench) postTrivial(ctx context.Context, path string, data []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.triv.url+"/upload?path="+url.QueryEscape(path), bytes.NewReader(data))
	return b.doTrivial(req, io.Discard)
}

func (b *bench) doTrivial(req *http.Request, w io.Writer) error {
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("trivial server: %s", resp.Status)
	}
	_, err = io.CopyBuffer(w, resp.Body, make([]byte, 64<<10))
	return err
}

func (b *bench) upload(ctx context.Context) []row {
	n := b.sz.upload
	name := fmt.Sprintf("upload %s", fmtBytes(n))
	t := atLeast(0.7)
	data := b.data[:n]
	var envd, limit rates
	// Uploads hit the disk (and envd fsyncs), which varies run to run: more reps.
	for range b.sz.reps * 5 / 3 {
		lp, ep := b.path("limit-upload.bin"), b.path("upload.bin")
		quiesce(lp, ep)
		t0 := time.Now()
		err := b.postTrivial(ctx, lp, data)
		dl := time.Since(t0)
		if err == nil {
			err = checkFile(lp, data, n)
		}
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		quiesce(lp, ep)
		t0 = time.Now()
		err = b.uploadFile(ctx, ep, bytes.NewReader(data), n)
		de := time.Since(t0)
		if err == nil {
			err = checkFile(ep, data, n)
		}
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		envd, limit = append(envd, float64(n)/de.Seconds()), append(limit, float64(n)/dl.Seconds())
	}
	r := row{name: name, envd: fmtRate(envd.median()), limit: fmtRate(limit.median()) + " POST to trivial Go server", target: t}
	r.judge(envd.median(), limit.median())
	return []row{r}
}

// quiesce removes earlier upload targets and flushes dirty pages, so neither
// side of a comparison pays for the other's writeback.
func quiesce(paths ...string) {
	for _, p := range paths {
		_ = os.Remove(p)
	}
	syscall.Sync()
}

// fixture writes pattern repeated to n bytes at path unless it is already there.
func fixture(path string, pattern []byte, n int64) error {
	if checkFile(path, pattern, n) == nil {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for left := n; left > 0; {
		k := min(left, int64(len(pattern)))
		if _, err := f.Write(pattern[:k]); err != nil {
			f.Close()
			return err
		}
		left -= k
	}
	return f.Close()
}

// getFiles downloads path from envd into w; gz asks for gzip and decodes it.
func (b *bench) getFiles(ctx context.Context, path string, gz bool, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.filesURL(path), nil)
	if err != nil {
		return err
	}
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET /files: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("GET /files: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	var body io.Reader = resp.Body
	if gz {
		if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
			return fmt.Errorf("GET /files with Accept-Encoding: gzip answered Content-Encoding %q", ce)
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return fmt.Errorf("GET /files: gzip: %w", err)
		}
		body = zr
	}
	if _, err := io.CopyBuffer(w, body, make([]byte, 64<<10)); err != nil {
		return fmt.Errorf("GET /files: read body: %w", err)
	}
	return nil
}

func (b *bench) download(ctx context.Context) []row {
	n := b.sz.upload
	name := fmt.Sprintf("download %s", fmtBytes(n))
	t := atLeast(0.9)
	data := b.data[:n]
	p := b.path("download.bin")
	if err := fixture(p, data, n); err != nil {
		return []row{errRow(name, t, fmt.Errorf("fixture: %w", err))}
	}
	var envd, limit rates
	for range b.sz.reps {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.triv.url+"/download?path="+url.QueryEscape(p), nil)
		dl, err := timedCheck(data, n, func(v *verifier) error { return b.doTrivial(req, v) })
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		de, err := timedCheck(data, n, func(v *verifier) error { return b.getFiles(ctx, p, false, v) })
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		envd, limit = append(envd, float64(n)/de.Seconds()), append(limit, float64(n)/dl.Seconds())
	}
	r := row{name: name, envd: fmtRate(envd.median()), limit: fmtRate(limit.median()) + " GET, ServeContent (sendfile)", target: t}
	r.judge(envd.median(), limit.median())
	return []row{r}
}

// textPattern is 1 MiB of log-like lines: compressible the way real files
// are, and not repeating within gzip's 32 KiB window.
func textPattern() []byte {
	r := rand.New(rand.NewPCG(6, 6))
	words := strings.Fields("process started stopped listening request response user file directory error warning " +
		"info debug sandbox envd upload download bytes latency ok failed retry connect stream event")
	var sb strings.Builder
	for i := 0; sb.Len() < 1<<20; i++ {
		fmt.Fprintf(&sb, "2026-11-28T21:%02d:%02d.%06dZ level=%s msg=%q id=%016x n=%d\n", i/60%60, i%60, r.IntN(1e6),
			words[r.IntN(4)+18], words[r.IntN(len(words))]+" "+words[r.IntN(len(words))], r.Uint64(), r.IntN(1e5))
	}
	return []byte(sb.String()[:1<<20])
}

// gzipPipe is the limit for gzip downloads: the same bytes compressed with
// gzip BestSpeed and decoded and checked by a second goroutine, in-process.
func gzipPipe(pattern []byte, n int64, v *verifier) error {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		zw, _ := gzip.NewWriterLevel(bw, gzip.BestSpeed)
		var err error
		for left := n; left > 0 && err == nil; {
			k := min(left, int64(len(pattern)))
			_, err = zw.Write(pattern[:k])
			left -= k
		}
		if err == nil {
			err = zw.Close()
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
	}()
	zr, err := gzip.NewReader(pr)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(v, zr, make([]byte, 64<<10))
	return err
}

func (b *bench) gzipDownload(ctx context.Context) []row {
	n := b.sz.gzip
	name := fmt.Sprintf("gzip download %s (log-like text)", fmtBytes(n))
	t := atLeast(0.6)
	pattern := textPattern()
	p := b.path("text.log")
	if err := fixture(p, pattern, n); err != nil {
		return []row{errRow(name, t, fmt.Errorf("fixture: %w", err))}
	}
	var envd, limit rates
	for range b.sz.reps {
		dl, err := timedCheck(pattern, n, func(v *verifier) error { return gzipPipe(pattern, n, v) })
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		de, err := timedCheck(pattern, n, func(v *verifier) error { return b.getFiles(ctx, p, true, v) })
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		envd, limit = append(envd, float64(n)/de.Seconds()), append(limit, float64(n)/dl.Seconds())
	}
	r := row{name: name, envd: fmtRate(envd.median()), limit: fmtRate(limit.median()) + " gzip BestSpeed → gunzip in-process", target: t}
	r.judge(envd.median(), limit.median())
	return []row{r}
}

func (b *bench) statLatency(ctx context.Context) []row {
	name := "Stat RPC latency"
	t := atMost(3)
	p := b.path("stat.txt")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		return []row{errRow(name, t, err)}
	}
	var envd, limit durations
	const warm = 5
	n := b.sz.iters * 5
	for i := range n + warm {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.triv.url+"/rt", nil)
		t0 := time.Now()
		err := b.doTrivial(req, io.Discard)
		dl := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		t0 = time.Now()
		resp, err := b.fs.Stat(ctx, &filesystem.StatRequest{Path: p})
		de := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("Stat: %w", err))}
		}
		if e := resp.GetEntry(); e.GetName() != "stat.txt" || e.GetSize() != 5 || e.GetType() != filesystem.FileType_FILE_TYPE_FILE {
			return []row{errRow(name, t, fmt.Errorf("Stat answered %v, want stat.txt, 5 bytes, file", e))}
		}
		if i >= warm {
			envd, limit = append(envd, de), append(limit, dl)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " HTTP round trip", target: t}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

// makeEntries creates n empty files in a new directory dir.
func makeEntries(dir string, n int) error {
	_ = os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for i := range n {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%06d", i)))
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

// listDirOnce runs ListDir and checks it returned exactly the n entries makeEntries made.
func (b *bench) listDirOnce(ctx context.Context, dir string, n int) (time.Duration, error) {
	t0 := time.Now()
	resp, err := b.fs.ListDir(ctx, &filesystem.ListDirRequest{Path: dir, Depth: 1})
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("ListDir: %w", err)
	}
	es := resp.GetEntries()
	if len(es) != n {
		return 0, fmt.Errorf("ListDir returned %d entries, want %d", len(es), n)
	}
	for i, e := range es {
		if want := fmt.Sprintf("f%06d", i); e.GetName() != want || e.GetPath() != filepath.Join(dir, want) {
			return 0, fmt.Errorf("ListDir entry %d is %q at %q, want %q (lexical order)", i, e.GetName(), e.GetPath(), want)
		}
	}
	return d, nil
}

func readdirLstat(dir string) error {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range es {
		if _, err := os.Lstat(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) listDir(ctx context.Context) []row {
	n := b.sz.listDir
	name := fmt.Sprintf("ListDir of %d entries", n)
	t := atMost(2)
	dir := b.path(fmt.Sprintf("list%d", n))
	if err := makeEntries(dir, n); err != nil {
		return []row{errRow(name, t, fmt.Errorf("fixture: %w", err))}
	}
	defer os.RemoveAll(dir)
	var envd, limit durations
	iters := max(3, b.sz.iters/10)
	for i := range iters + 1 {
		t0 := time.Now()
		if err := readdirLstat(dir); err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		dl := time.Since(t0)
		de, err := b.listDirOnce(ctx, dir, n)
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		if i > 0 {
			envd, limit = append(envd, de), append(limit, dl)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " readdir + lstat", target: t}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

func (b *bench) makeDirRemove(ctx context.Context) []row {
	name := "MakeDir + Remove cycle"
	t := atMost(2.5)
	ep, lp := b.path("mkcycle"), b.path("mkcycle-limit")
	var envd, limit durations
	const warm = 5
	for i := range b.sz.iters*2 + warm {
		t0 := time.Now()
		err := os.Mkdir(lp, 0o755)
		if err == nil {
			err = os.Remove(lp)
		}
		dl := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		t0 = time.Now()
		resp, err := b.fs.MakeDir(ctx, &filesystem.MakeDirRequest{Path: ep})
		if err == nil {
			_, err = b.fs.Remove(ctx, &filesystem.RemoveRequest{Path: ep})
		}
		de := time.Since(t0)
		if err != nil {
			return []row{errRow(name, t, err)}
		}
		if e := resp.GetEntry(); e.GetType() != filesystem.FileType_FILE_TYPE_DIRECTORY || e.GetPath() != ep {
			return []row{errRow(name, t, fmt.Errorf("MakeDir answered %v, want directory %s", e, ep))}
		}
		if _, err := os.Lstat(ep); !errors.Is(err, os.ErrNotExist) {
			return []row{errRow(name, t, fmt.Errorf("after Remove, lstat %s: %v", ep, err))}
		}
		if i >= warm {
			envd, limit = append(envd, de), append(limit, dl)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " mkdir + rmdir", target: t}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}

type fsEvent struct {
	name string
	at   time.Time
}

// inotifyEvents is the limit for WatchDir: raw inotify on dir, in-process.
func inotifyEvents(dir string, out chan<- fsEvent) (stop func(), err error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_DELETE|unix.IN_MOVE|unix.IN_ATTRIB); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify_add_watch: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking fd: reads go through the poller, Close wakes them
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
				nameb := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				out <- fsEvent{name: strings.TrimRight(string(nameb), "\x00"), at: now}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
	return func() { f.Close() }, nil
}

// watchEvents streams WatchDir CREATE events on dir into out, after the start event.
func (b *bench) watchEvents(ctx context.Context, dir string, out chan<- fsEvent) (started <-chan error) {
	st := make(chan error, 1)
	go func() {
		stream, err := b.fs.WatchDir(ctx, &filesystem.WatchDirRequest{Path: dir})
		if err != nil {
			st <- fmt.Errorf("WatchDir: %w", err)
			return
		}
		defer stream.Close()
		first := true
		for stream.Receive() {
			now := time.Now()
			switch e := stream.Msg().GetEvent().(type) {
			case *filesystem.WatchDirResponse_Start:
				if first {
					st <- nil
					first = false
				}
			case *filesystem.WatchDirResponse_Filesystem:
				if e.Filesystem.GetType() == filesystem.EventType_EVENT_TYPE_CREATE {
					out <- fsEvent{name: e.Filesystem.GetName(), at: now}
				}
			}
		}
		if first {
			st <- fmt.Errorf("WatchDir ended before its start event: %v", stream.Err())
		}
	}()
	return st
}

// awaitEvent waits for the event naming name and returns when it arrived.
func awaitEvent(ch <-chan fsEvent, name string) (time.Time, error) {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.name == name {
				return ev.at, nil
			}
		case <-timeout:
			return time.Time{}, fmt.Errorf("no event for %s within 5s", name)
		}
	}
}

func (b *bench) watchLatency(ctx context.Context) []row {
	name := "WatchDir event latency (mkdir → CREATE)"
	t := atMost(4)
	ed, ld := b.path("watch"), b.path("watch-limit")
	for _, d := range []string{ed, ld} {
		_ = os.RemoveAll(d)
		if err := os.Mkdir(d, 0o755); err != nil {
			return []row{errRow(name, t, err)}
		}
		defer os.RemoveAll(d)
	}
	lch := make(chan fsEvent, 1024)
	stop, err := inotifyEvents(ld, lch)
	if err != nil {
		return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
	}
	defer stop()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ech := make(chan fsEvent, 1024)
	select {
	case err := <-b.watchEvents(wctx, ed, ech):
		if err != nil {
			return []row{errRow(name, t, err)}
		}
	case <-time.After(10 * time.Second):
		return []row{errRow(name, t, errors.New("WatchDir sent no start event within 10s"))}
	}
	var envd, limit durations
	const warm = 3
	for i := range b.sz.watch + warm {
		entry := fmt.Sprintf("d%d", i)
		t0 := time.Now()
		if err := os.Mkdir(filepath.Join(ld, entry), 0o755); err != nil {
			return []row{errRow(name, t, err)}
		}
		at, err := awaitEvent(lch, entry)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("limit: %w", err))}
		}
		dl := at.Sub(t0)
		t0 = time.Now()
		if err := os.Mkdir(filepath.Join(ed, entry), 0o755); err != nil {
			return []row{errRow(name, t, err)}
		}
		at, err = awaitEvent(ech, entry)
		if err != nil {
			return []row{errRow(name, t, fmt.Errorf("WatchDir: %w", err))}
		}
		if i >= warm {
			envd, limit = append(envd, at.Sub(t0)), append(limit, dl)
		}
	}
	r := row{name: name, envd: fmtLatency(envd), limit: fmtLatency(limit) + " inotify in-process", target: t}
	r.judge(float64(envd.median()), float64(limit.median()))
	return []row{r}
}
