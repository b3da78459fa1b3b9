package client

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Progress is called as a transfer moves bytes: done so far, and the total
// when known (-1 otherwise). It runs on the transferring goroutine; keep it
// quick.
type Progress func(done, total int64)

type transfer struct {
	gzip     bool
	size     int64
	off, n   int64
	ranged   bool
	progress Progress
	metadata map[string]string
}

// FileOption adjusts an Upload or Download.
type FileOption func(*transfer)

// Gzip compresses the transfer on the wire: an upload is gzipped on the fly
// (Content-Encoding: gzip), a download is asked for gzip and decompressed.
// A Range download is never compressed.
func Gzip() FileOption { return func(t *transfer) { t.gzip = true } }

// Length tells Upload the body's length, so it is sent with a Content-Length
// (unless gzipped) and Progress knows the total.
func Length(n int64) FileOption { return func(t *transfer) { t.size = n } }

// Range downloads only n bytes from offset off (n < 0: to the end).
func Range(off, n int64) FileOption {
	return func(t *transfer) { t.off, t.n, t.ranged = off, n, true }
}

// OnProgress sets a progress callback.
func OnProgress(p Progress) FileOption { return func(t *transfer) { t.progress = p } }

// Metadata stores key=value pairs with an uploaded file (envd keeps them as
// user.e2b.* extended attributes and returns them in Entry.Metadata). An
// upload without Metadata clears the file's metadata.
func Metadata(m map[string]string) FileOption { return func(t *transfer) { t.metadata = m } }

func applyTransfer(opts []FileOption) transfer {
	t := transfer{size: -1}
	for _, o := range opts {
		o(&t)
	}
	return t
}

// UploadInfo is one file envd wrote.
type UploadInfo struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func (c *Client) filesURL(path string) string {
	q := url.Values{"path": {path}}
	if c.user != "" {
		q.Set("username", c.user)
	}
	return c.base.String() + "/files?" + q.Encode()
}

// Upload streams r into the file at path (created with missing parents,
// owned by the Client's user, replaced if it exists). r is read as it is sent:
// nothing is held in memory beyond a copy buffer.
func (c *Client) Upload(ctx context.Context, path string, r io.Reader, opts ...FileOption) (*UploadInfo, error) {
	const op = "POST /files"
	t := applyTransfer(opts)
	for k, v := range t.metadata {
		if !printable(k) || k == "" || !printable(v) {
			return nil, &Error{Op: op, Kind: ErrInvalidArgument, Message: fmt.Sprintf("metadata %q=%q: keys and values must be printable ASCII, keys non-empty", k, v)}
		}
	}
	body := io.Reader(&counter{r: r, total: t.size, progress: t.progress})
	length := t.size
	if t.gzip {
		pr, pw := io.Pipe()
		src := body
		go func() {
			zw := gzip.NewWriter(pw)
			_, err := io.Copy(zw, src)
			if err == nil {
				err = zw.Close()
			}
			pw.CloseWithError(err)
		}()
		body, length = pr, -1
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.filesURL(path), body)
	if err != nil {
		return nil, err
	}
	if length >= 0 {
		req.ContentLength = length
		if length == 0 {
			req.Body = http.NoBody
		}
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if t.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range t.metadata {
		req.Header.Set("X-Metadata-"+k, v)
	}
	c.setHeaders(req.Header, false)
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, transportError(op, err)
	}
	defer drain(res)
	if res.StatusCode != http.StatusOK {
		return nil, httpError(op, res)
	}
	var infos []UploadInfo
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&infos); err != nil {
		return nil, &Error{Op: op, Kind: ErrInternal, Status: res.StatusCode, Message: "bad response body: " + err.Error()}
	}
	if len(infos) != 1 {
		return nil, &Error{Op: op, Kind: ErrInternal, Status: res.StatusCode, Message: fmt.Sprintf("envd reported %d files written, want 1", len(infos))}
	}
	return &infos[0], nil
}

// Download streams the file at path into w and returns the number of
// (decompressed) bytes written. A missing file is ErrNotFound, a directory
// ErrInvalidArgument, a Range past the end ErrRangeNotSatisfiable.
func (c *Client) Download(ctx context.Context, path string, w io.Writer, opts ...FileOption) (int64, error) {
	const op = "GET /files"
	t := applyTransfer(opts)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.filesURL(path), nil)
	if err != nil {
		return 0, err
	}
	// Explicit, so net/http neither asks for nor silently undoes gzip.
	req.Header.Set("Accept-Encoding", "identity")
	if t.gzip && !t.ranged {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	want := http.StatusOK
	if t.ranged {
		want = http.StatusPartialContent
		if t.n < 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", t.off))
		} else if t.n == 0 {
			return 0, nil
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", t.off, t.off+t.n-1))
		}
	}
	c.setHeaders(req.Header, false)
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, transportError(op, err)
	}
	defer drain(res)
	if res.StatusCode != want {
		return 0, httpError(op, res)
	}
	var body io.Reader = res.Body
	total := res.ContentLength
	if strings.EqualFold(res.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(res.Body)
		if err != nil {
			return 0, &Error{Op: op, Kind: ErrInternal, Message: "bad gzip body: " + err.Error()}
		}
		body, total = zr, -1
	}
	n, err := io.Copy(w, &counter{r: body, total: total, progress: t.progress})
	if err != nil {
		return n, transportError(op, err)
	}
	return n, nil
}

// Op is what a signed URL allows.
type Op string

const (
	Read  Op = "read"  // GET /files
	Write Op = "write" // POST /files
)

// SignedURL returns a /files URL that lets whoever holds it read or write path
// as user without the access token, until expiry (zero: no expiry), signed
// with the Client's token as envd checks it: "v1_" + unpadded standard
// base64 of SHA-256("path:op:user:token[:expiry]"). user "" means envd's
// default user. Without a token envd checks nothing and the URL is unsigned.
func (c *Client) SignedURL(path string, op Op, user string, expiry time.Time) string {
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("username", user)
	}
	if c.token != "" {
		msg := path + ":" + string(op) + ":" + user + ":" + c.token
		if !expiry.IsZero() {
			exp := strconv.FormatInt(expiry.Unix(), 10)
			msg += ":" + exp
			q.Set("signature_expiration", exp)
		}
		sum := sha256.Sum256([]byte(msg))
		q.Set("signature", "v1_"+base64.RawStdEncoding.EncodeToString(sum[:]))
	}
	return c.base.String() + "/files?" + q.Encode()
}

// counter reports progress as a reader is consumed.
type counter struct {
	r        io.Reader
	done     int64
	total    int64
	progress Progress
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.done += int64(n)
	if c.progress != nil && (n > 0 || err == io.EOF) {
		c.progress(c.done, c.total)
	}
	return n, err
}

// drain reads a little of what is left so the connection can be reused, then
// closes the body.
func drain(res *http.Response) {
	_, _ = io.CopyN(io.Discard, res.Body, 64<<10)
	res.Body.Close()
}

// get does a GET of a small JSON endpoint.
func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	op := "GET " + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+path, nil)
	if err != nil {
		return err
	}
	c.setHeaders(req.Header, false)
	res, err := c.hc.Do(req)
	if err != nil {
		return transportError(op, err)
	}
	defer drain(res)
	if res.StatusCode != http.StatusOK {
		return httpError(op, res)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(v); err != nil {
		return &Error{Op: op, Kind: ErrInternal, Status: res.StatusCode, Message: "bad response body: " + err.Error()}
	}
	return nil
}

// post does a POST expecting 204.
func (c *Client) post(ctx context.Context, path string, body io.Reader) error {
	op := "POST " + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.setHeaders(req.Header, false)
	res, err := c.hc.Do(req)
	if err != nil {
		return transportError(op, err)
	}
	defer drain(res)
	if res.StatusCode != http.StatusNoContent {
		return httpError(op, res)
	}
	return nil
}

// printable is envd's rule for metadata (spec §7.7): bytes 0x20–0x7E. Checked
// here because net/http would refuse most other bytes with a transport error.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
