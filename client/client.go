package client

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/gen/envd/v1/envdv1connect"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
)

// DefaultURL is where envd listens inside a sandbox.
const DefaultURL = "http://127.0.0.1:49983"

// Client talks to one envd. It is safe for concurrent use; As derives a Client
// for another user sharing the same connections.
type Client struct {
	base      *url.URL
	hc        *http.Client
	token     string
	user      string
	keepalive time.Duration
	json      bool
	proc      processconnect.ProcessClient
	fs        filesystemconnect.FilesystemClient
	output    envdv1connect.OutputClient
	exits     envdv1connect.ExitsClient
	ports     envdv1connect.PortsClient
}

type settings struct {
	hc        *http.Client
	h2c       bool
	token     string
	user      string
	keepalive time.Duration
	json      bool
}

// Option configures New.
type Option func(*settings)

// WithHTTPClient makes every request go through hc (its transport, timeouts,
// proxies). Without it the Client builds its own HTTP/1.1 (or, WithH2C, h2c)
// client. hc should have no overall Timeout: streams and large transfers run
// as long as their context allows.
func WithHTTPClient(hc *http.Client) Option { return func(s *settings) { s.hc = hc } }

// WithH2C makes the default HTTP client speak HTTP/2 without TLS (h2c, prior
// knowledge) instead of HTTP/1.1: one connection multiplexes every stream.
// Ignored with WithHTTPClient.
func WithH2C() Option { return func(s *settings) { s.h2c = true } }

// WithToken sends the access token set by /init (X-Access-Token) on every
// request, and signs URLs with it (SignedURL).
func WithToken(token string) Option { return func(s *settings) { s.token = token } }

// WithUser makes RPCs and file transfers run as this sandbox user (Basic auth
// for RPCs, the username parameter for /files). Empty means envd's default
// user.
func WithUser(user string) Option { return func(s *settings) { s.user = user } }

// WithKeepalive sets the interval at which envd sends keepalive events on
// streams (Keepalive-Ping-Interval, whole seconds, at least 1). A stream that
// receives nothing for three intervals fails with ErrUnavailable.
func WithKeepalive(d time.Duration) Option { return func(s *settings) { s.keepalive = d } }

// WithJSON makes RPCs use the Connect JSON codec, as the E2B SDKs do, instead
// of binary protobuf, as the Wrenn host agent does.
func WithJSON() Option { return func(s *settings) { s.json = true } }

// New returns a Client for the envd at baseURL (e.g. DefaultURL).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("client: URL must be http://HOST:PORT or https://HOST:PORT")
	}
	s := settings{keepalive: 50 * time.Second}
	for _, o := range opts {
		o(&s)
	}
	if s.keepalive < time.Second {
		s.keepalive = time.Second
	}
	if s.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		if s.h2c {
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		s.hc = &http.Client{Transport: tr}
	}
	c := &Client{base: u, hc: s.hc, token: s.token, user: s.user, keepalive: s.keepalive, json: s.json}
	c.bind()
	return c, nil
}

// bind makes the generated clients, whose interceptor reads c's headers.
func (c *Client) bind() {
	copts := []connect.ClientOption{connect.WithInterceptors(headers{c})}
	if c.json {
		copts = append(copts, connect.WithProtoJSON())
	}
	base := c.base.String()
	c.proc = processconnect.NewProcessClient(c.hc, base, copts...)
	c.fs = filesystemconnect.NewFilesystemClient(c.hc, base, copts...)
	c.output = envdv1connect.NewOutputClient(c.hc, base, copts...)
	c.exits = envdv1connect.NewExitsClient(c.hc, base, copts...)
	c.ports = envdv1connect.NewPortsClient(c.hc, base, copts...)
}

// As returns a Client acting as another sandbox user (empty: envd's default),
// sharing this one's HTTP client and token.
func (c *Client) As(user string) *Client {
	d := *c
	d.user = user
	d.bind()
	return &d
}

// URL is the base URL envd is reached at.
func (c *Client) URL() string { return c.base.String() }

// User is the sandbox user requests run as ("" = envd's default).
func (c *Client) User() string { return c.user }

// setHeaders adds the token, the Basic-auth user and the keepalive interval.
func (c *Client) setHeaders(h http.Header, stream bool) {
	if c.token != "" {
		h.Set("X-Access-Token", c.token)
	}
	if c.user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.user+":")))
	}
	if stream {
		h.Set("Keepalive-Ping-Interval", strconv.Itoa(int(c.keepalive/time.Second)))
	}
}

// headers is the connect interceptor that puts the Client's headers on RPCs.
type headers struct{ c *Client }

func (h headers) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		h.c.setHeaders(req.Header(), false)
		return next(ctx, req)
	}
}

func (h headers) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		h.c.setHeaders(conn.RequestHeader(), spec.StreamType == connect.StreamTypeServer)
		return conn
	}
}

func (h headers) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// watchdog cancels a stream when nothing arrived for three keepalive
// intervals. Reset is called on every message.
type watchdog struct {
	t       *time.Timer
	d       time.Duration
	expired chan struct{}
	once    sync.Once
}

func newWatchdog(d time.Duration, cancel context.CancelFunc) *watchdog {
	w := &watchdog{d: 3 * d, expired: make(chan struct{})}
	w.t = time.AfterFunc(w.d, func() {
		w.once.Do(func() { close(w.expired) })
		cancel()
	})
	return w
}

func (w *watchdog) reset() { w.t.Reset(w.d) }
func (w *watchdog) stop()  { w.t.Stop() }

// fired reports whether the watchdog ended the stream.
func (w *watchdog) fired() bool {
	select {
	case <-w.expired:
		return true
	default:
		return false
	}
}

// stalled is the error of a stream the watchdog ended.
func stalled(op string, d time.Duration) error {
	return &Error{Op: op, Kind: ErrUnavailable, Message: "no message or keepalive for " + d.String()}
}
