package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is a child HTTP server this command started: envd or the trivial
// reference server.
type server struct {
	cmd     *exec.Cmd
	url     string
	healthy time.Duration // from fork to the first 200 on /health
	log     string
	done    chan error
	stopped time.Duration // from SIGTERM to exit

	stopOnce sync.Once
	stopErr  error
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// spawn starts bin with the arguments args(port) returns and waits until its
// /health answers 200. Both envd and the trivial server go through here, so
// spawn→healthy is measured the same way for both.
func spawn(ctx context.Context, bin string, args func(port int) []string, logDir string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.CreateTemp(logDir, filepath.Base(bin)+"-*.log")
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args(port)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C on the benchmark reaches us first
	// and we stop the daemon in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s := &server{cmd: cmd, url: "http://127.0.0.1:" + strconv.Itoa(port), log: logf.Name(), done: make(chan error, 1)}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { s.done <- cmd.Wait() }()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.healthy = time.Since(t0)
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("%s exited before healthy: %v (log %s)", bin, err, s.log)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("%s not healthy within 15s (last: %v; log %s)", bin, err, s.log)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop asks for a graceful shutdown (envd gives streams 5 s, then kills its
// processes and syncs) and kills after 15 s. It is safe to call twice.
func (s *server) stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.doStop() })
	return s.stopErr
}

func (s *server) doStop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t0 := time.Now()
	select {
	case err := <-s.done:
		s.stopped = time.Since(t0)
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM {
			return nil
		}
		return err
	case <-time.After(15 * time.Second):
		state := procState(s.pid())
		// A Go daemon prints every goroutine's stack on SIGQUIT: the log then
		// shows what shutdown was waiting for.
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
			return fmt.Errorf("did not stop within 15s of SIGTERM (%s); stacks from SIGQUIT in %s", state, s.log)
		case <-time.After(2 * time.Second):
		}
		_ = s.cmd.Process.Kill()
		select {
		case <-s.done:
			return fmt.Errorf("did not stop within 15s of SIGTERM (%s); killed", state)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("did not stop within 15s of SIGTERM (%s), nor within 30s of SIGKILL (%s)", state, procState(s.pid()))
		}
	}
}

// procState describes where a process is stuck, for error messages.
func procState(pid int) string {
	var parts []string
	if st, err := procStatusLine(pid, "State"); err == nil {
		parts = append(parts, "state "+st)
	}
	if w, err := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid)); err == nil && len(w) > 0 {
		parts = append(parts, "wchan "+string(w))
	}
	if ts, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		var dstate int
		for _, t := range ts {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name())); err == nil {
				if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'D' {
					dstate++
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%d threads, %d in D state", len(ts), dstate))
	}
	return strings.Join(parts, ", ")
}

func procStatusLine(pid int, key string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s", key)
}

// alive reports whether a process with pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(st), ')')
	return i > 0 && i+2 < len(st) && st[i+2] != 'Z'
}

// clockTick is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; the
// kernel fixes it at 100 on every architecture Go supports on Linux.
const clockTick = 10 * time.Millisecond

// procCPU returns user+system CPU time the process has used (all threads).
func procCPU(pid int) (time.Duration, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	i := strings.LastIndexByte(string(st), ')')
	if i < 0 {
		return 0, errors.New("parse stat: no ')'")
	}
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("parse stat: short line")
	}
	// After "pid (comm)": state is field 3 of the line, utime 14, stime 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse stat: %w", err)
	}
	return time.Duration(ut+stime) * clockTick, nil
}

// procStatus returns a "kB" field of /proc/<pid>/status (VmRSS, VmHWM) in bytes.
func procStatus(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", key, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux ≥ 4.0,
// needs the right to ptrace the process).
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// trivialSource is the reference "trivial Go HTTP server": the least a Go
// program needs to do to answer the same kinds of request envd answers.
const trivialSource = `package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{\"version\":\"0\"}\n")
	})
	http.HandleFunc("GET /rt", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	http.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.OpenFile(r.URL.Query().Get("path"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_, err = io.Copy(f, r.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	http.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), 404)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		http.ServeContent(w, r, st.Name(), st.ModTime(), f)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
`

// buildTrivial compiles trivialSource the way scripts/build compiles envd
// (static, trimmed, stripped), so binary sizes compare like with like.
func buildTrivial(ctx context.Context, dir string) (string, error) {
	src := filepath.Join(dir, "trivial")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module trivial\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(trivialSource), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "trivial-server")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build trivial server: %w: %s", err, out)
	}
	return bin, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
