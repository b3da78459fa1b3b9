package vm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// Client drives one envd over the wire as its clients do: the generated
// Connect clients (binary proto, HTTP/1.1) and plain HTTP.
type Client struct {
	Base  string
	Token string // X-Access-Token, once /init set one
	HC    *http.Client
}

// NewClient talks to the envd at base (http://127.0.0.1:P).
func NewClient(base string) *Client {
	tr := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	tr.Protocols.SetHTTP1(true)
	c := &Client{Base: strings.TrimRight(base, "/")}
	c.HC = &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if c.Token != "" {
			r = r.Clone(r.Context())
			r.Header.Set("X-Access-Token", c.Token)
		}
		return tr.RoundTrip(r)
	})}
	return c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Process is the process service; user "" is envd's default user.
func (c *Client) Process(user string) processconnect.ProcessClient {
	hc := c.HC
	if user != "" {
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
		next := c.HC.Transport
		hc = &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", auth)
			return next.RoundTrip(r)
		})}
	}
	return processconnect.NewProcessClient(hc, c.Base)
}

// Budget is a context cancelled after d that carries no deadline: connect-go
// would send a deadline as Connect-Timeout-Ms, which envd takes as the
// lifetime of the processes started under it (§8.1).
func Budget(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	t := time.AfterFunc(d, cancel)
	return ctx, func() { t.Stop(); cancel() }
}

// Result is a finished process.
type Result struct {
	Pid    uint32
	Stdout string
	Stderr string
	End    *process.ProcessEvent_EndEvent
}

// OK fails unless the process exited 0.
func (r Result) OK() error {
	if !r.End.GetExited() || r.End.GetExitCode() != 0 {
		return fmt.Errorf("ended with %q, stderr %q, stdout %q", r.End.GetStatus(), trim(r.Stderr, 400), trim(r.Stdout, 400))
	}
	return nil
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Run starts cmd as user and collects its output until it ends.
func (c *Client) Run(ctx context.Context, user, cmd string, args ...string) (Result, error) {
	return c.RunReq(ctx, user, &process.StartRequest{Process: &process.ProcessConfig{Cmd: cmd, Args: args}, Stdin: proto.Bool(false)})
}

// Sh runs a bash script as user.
func (c *Client) Sh(ctx context.Context, user, script string) (Result, error) {
	return c.Run(ctx, user, "/bin/bash", "-c", script)
}

// inRoot starts processes in / unless the request names a directory: the
// default workdir is whatever the last /init set, and a suite run before may
// have left one it removed since.
func inRoot(req *process.StartRequest) *process.StartRequest {
	if req.GetProcess().Cwd == nil {
		req.Process.Cwd = proto.String("/")
	}
	return req
}

// RunReq is Run for a full StartRequest.
func (c *Client) RunReq(ctx context.Context, user string, req *process.StartRequest) (Result, error) {
	var res Result
	req = inRoot(req)
	stream, err := c.Process(user).Start(ctx, req)
	if err != nil {
		return res, fmt.Errorf("Start: %w", err)
	}
	defer stream.Close()
	var out, errb bytes.Buffer
	for stream.Receive() {
		switch e := stream.Msg().GetEvent().GetEvent().(type) {
		case *process.ProcessEvent_Start:
			res.Pid = e.Start.GetPid()
		case *process.ProcessEvent_Data:
			out.Write(e.Data.GetStdout())
			out.Write(e.Data.GetPty())
			errb.Write(e.Data.GetStderr())
		case *process.ProcessEvent_End:
			res.End = e.End
		}
	}
	res.Stdout, res.Stderr = out.String(), errb.String()
	if err := stream.Err(); err != nil {
		return res, fmt.Errorf("Start stream: %w", err)
	}
	if res.End == nil {
		return res, errors.New("Start stream ended without an end event")
	}
	return res, nil
}

// Output runs a bash script as user and returns its stdout, failing unless it
// exited 0.
func (c *Client) Output(ctx context.Context, user, script string) (string, error) {
	r, err := c.Sh(ctx, user, script)
	if err == nil {
		err = r.OK()
	}
	if err != nil {
		return r.Stdout, fmt.Errorf("%s: %w", trim(script, 80), err)
	}
	return r.Stdout, nil
}

// Upload writes data to path as user through POST /files (multipart) and
// returns the HTTP status and body.
func (c *Client) Upload(ctx context.Context, user, path string, data io.Reader) (int, string, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("file", "upload")
		if err == nil {
			_, err = io.Copy(part, data)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("username", user)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"/files?"+q.Encode(), pr)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return c.do(req)
}

// Init posts body to /init.
func (c *Client) Init(ctx context.Context, body map[string]any) (int, string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"/init", bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req)
}

// Get is a plain GET of path.
func (c *Client) Get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+path, nil)
	if err != nil {
		return 0, "", err
	}
	return c.do(req)
}

func (c *Client) do(req *http.Request) (int, string, error) {
	resp, err := c.HC.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// Bg is a process running in the background of a check.
type Bg struct {
	Pid  uint32
	done chan struct{}
	res  Result
	err  error
}

// Start starts req as user and returns once the start event arrived; the
// stream is consumed in the background until the process ends.
func (c *Client) Start(ctx context.Context, user string, req *process.StartRequest) (*Bg, error) {
	b := &Bg{done: make(chan struct{})}
	started := make(chan uint32, 1)
	req = inRoot(req)
	go func() {
		defer close(b.done)
		stream, err := c.Process(user).Start(ctx, req)
		if err != nil {
			b.err = fmt.Errorf("Start: %w", err)
			return
		}
		defer stream.Close()
		var out, errb bytes.Buffer
		for stream.Receive() {
			switch e := stream.Msg().GetEvent().GetEvent().(type) {
			case *process.ProcessEvent_Start:
				b.Pid = e.Start.GetPid()
				started <- b.Pid
			case *process.ProcessEvent_Data:
				out.Write(e.Data.GetStdout())
				out.Write(e.Data.GetPty())
				errb.Write(e.Data.GetStderr())
			case *process.ProcessEvent_End:
				b.res.End = e.End
			}
		}
		b.res.Pid, b.res.Stdout, b.res.Stderr = b.Pid, out.String(), errb.String()
		b.err = stream.Err()
		if b.err == nil && b.res.End == nil {
			b.err = errors.New("Start stream ended without an end event")
		}
	}()
	select {
	case pid := <-started:
		b.Pid = pid
		return b, nil
	case <-b.done:
		if b.err == nil {
			b.err = errors.New("Start stream ended before the start event")
		}
		return nil, b.err
	}
}

// Done is closed when the stream has ended.
func (b *Bg) Done() <-chan struct{} { return b.done }

// Wait waits for the stream to end, at most d.
func (b *Bg) Wait(d time.Duration) (Result, error) {
	select {
	case <-b.done:
		return b.res, b.err
	case <-time.After(d):
		return b.res, fmt.Errorf("process %d still running after %s", b.Pid, d)
	}
}

// Signal sends sig to the process pid (SendSignal RPC) as user.
func (c *Client) Signal(ctx context.Context, user string, pid uint32, sig process.Signal) error {
	_, err := c.Process(user).SendSignal(ctx, &process.SendSignalRequest{
		Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}}, Signal: sig})
	return err
}
