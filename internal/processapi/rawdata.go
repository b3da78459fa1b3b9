package processapi

import (
	"context"
	"encoding/binary"
	"net/http"

	"github.com/envd-dev/envd/internal/proc"
)

// Output chunks of Start and Connect are written to the response as they
// are, beside connect-go: for the Connect protocol with binary proto, a data
// event is a 5-byte envelope prefix, three protobuf tags with lengths, and
// the chunk's bytes. connect-go would first marshal the chunk into a pooled
// buffer of its own (a copy of every output byte, about an eighth of the
// daemon's CPU on a busy stream) before writing that buffer. Start, end and
// keepalive events still go through stream.Send, and every write is a whole
// envelope on the handler's goroutine, so the byte stream is the one
// connect-go would have produced (TestRawDataEventBytes).

type rawKey struct{}

// connectProtoStream is the content type of a Connect streaming call with
// binary proto; every other protocol or codec keeps connect-go's path.
const connectProtoStream = "application/connect+proto"

// Wrap lets the streaming handlers of h reach their http.ResponseWriter.
// Mount it directly around the handler connect-go made, so the writer it
// hands down is the very one connect-go writes to.
func Wrap(pattern string, h http.Handler) (string, http.Handler) {
	return pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") == connectProtoStream {
			r = r.WithContext(context.WithValue(r.Context(), rawKey{}, w))
		}
		h.ServeHTTP(w, r)
	})
}

// rawOutput writes data events straight to the response.
type rawOutput struct {
	w     http.ResponseWriter
	flush func() error
	hdr   [5 + 3*(1+binary.MaxVarintLen64)]byte
}

// rawWriter is nil unless ctx comes from Wrap with a writer that can flush.
func rawWriter(ctx context.Context) *rawOutput {
	w, _ := ctx.Value(rawKey{}).(http.ResponseWriter)
	if w == nil {
		return nil
	}
	if f, ok := w.(interface{ FlushError() error }); ok {
		return &rawOutput{w: w, flush: f.FlushError}
	}
	if f, ok := w.(http.Flusher); ok {
		return &rawOutput{w: w, flush: func() error { f.Flush(); return nil }}
	}
	return nil
}

// header is the envelope prefix and protobuf framing of
// {Start,Connect}Response{event: {data: {<stream>: data}}} for n bytes.
func (o *rawOutput) header(s proc.Stream, n int) []byte {
	tag := byte(0x0a) // DataEvent.stdout = 1
	switch s {
	case proc.Stderr:
		tag = 0x12 // stderr = 2
	case proc.PTY:
		tag = 0x1a // pty = 3
	}
	dl := 1 + uvarintLen(n) + n   // DataEvent
	el := 1 + uvarintLen(dl) + dl // ProcessEvent{data = 2}
	ml := 1 + uvarintLen(el) + el // the response {event = 1}
	b := o.hdr[:0]
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(ml))
	b = append(b, 0x0a)
	b = binary.AppendUvarint(b, uint64(el))
	b = append(b, 0x12)
	b = binary.AppendUvarint(b, uint64(dl))
	b = append(b, tag)
	return binary.AppendUvarint(b, uint64(n))
}

func (o *rawOutput) send(c proc.Chunk) error {
	if _, err := o.w.Write(o.header(c.Stream, len(c.Data))); err != nil {
		return err
	}
	if _, err := o.w.Write(c.Data); err != nil {
		return err
	}
	return o.flush()
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}
