package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// checkedBodies wraps a mounted Connect service so that a request body that
// ends too early, inside an envelope (streams, gRPC, gRPC-Web) or before its
// Content-Length (Connect unary), is the client's fault: invalid_argument
// naming what was cut. connect-go calls the first internal and the second
// unknown, and lets neither be changed by an option or interceptor, since it
// reads unary requests before interceptors run. It hands a read error that
// is already a *connect.Error to the client as it is, which is what this
// relies on.
func checkedBodies(pattern string, h http.Handler) (string, http.Handler) {
	return pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			ct := r.Header.Get("Content-Type")
			r.Body = &checkedBody{
				ReadCloser: r.Body,
				enveloped:  strings.HasPrefix(ct, "application/connect+") || strings.HasPrefix(ct, "application/grpc"),
				announced:  r.ContentLength,
			}
		}
		h.ServeHTTP(w, r)
	})
}

const envelopePrefix = 5 // flags byte, then the message length as big-endian uint32

// checkedBody follows the envelope framing of what it passes on, to tell at
// the end of the body whether an envelope was left incomplete.
type checkedBody struct {
	io.ReadCloser
	enveloped bool
	announced int64 // Content-Length, -1 if none
	read      int64

	prefix  [envelopePrefix]byte
	npref   int    // bytes of the current prefix seen
	promise uint32 // length the last complete prefix announced
	left    int64  // bytes of the current message still to come
}

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if b.enveloped {
		b.follow(p[:n])
	}
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) { //nolint:errorlint // io.EOF is never wrapped
		if cut := b.cut(err); cut != nil {
			return n, cut
		}
	}
	return n, err
}

func (b *checkedBody) follow(p []byte) {
	for len(p) > 0 {
		if b.left > 0 {
			k := min(int64(len(p)), b.left)
			b.left -= k
			p = p[k:]
			continue
		}
		k := copy(b.prefix[b.npref:], p)
		b.npref += k
		p = p[k:]
		if b.npref == envelopePrefix {
			b.npref = 0
			b.promise = binary.BigEndian.Uint32(b.prefix[1:])
			b.left = int64(b.promise)
		}
	}
}

func (b *checkedBody) cut(err error) error {
	var msg string
	switch {
	case b.enveloped && b.npref > 0:
		msg = fmt.Sprintf("truncated envelope: the body ended %d bytes into a %d-byte envelope prefix", b.npref, envelopePrefix)
	case b.enveloped && b.left > 0:
		msg = fmt.Sprintf("truncated envelope: its prefix promised a %d-byte message, the body ended after %d", b.promise, int64(b.promise)-b.left)
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = fmt.Sprintf("truncated request body: ended after %d of the %d bytes of its Content-Length", b.read, b.announced)
	default:
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
}
