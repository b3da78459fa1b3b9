package daemon_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/envd-dev/envd/internal/envdtest"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/gen/filesystem/filesystemconnect"
	"google.golang.org/protobuf/proto"
)

func envelope(length uint32, payload []byte) []byte {
	out := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(out[1:], length)
	return append(out, payload...)
}

// rawCall sends one request with exactly body (Content-Length says
// announced), half-closes the connection so the server sees the body end,
// and returns the response with its body read.
func rawCall(t *testing.T, addr, path, contentType string, announced int, body []byte) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnect-Protocol-Version: 1\r\n\r\n",
		path, addr, contentType, announced)
	conn.Write(body)
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// wireError extracts the code and message each protocol puts its error in.
func wireError(t *testing.T, contentType string, resp *http.Response, body []byte) (string, string) {
	t.Helper()
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	switch {
	case strings.HasPrefix(contentType, "application/connect+"):
		// The end-stream envelope (flag 2) carries {"error": {...}}.
		for len(body) >= 5 {
			n := binary.BigEndian.Uint32(body[1:5])
			msg := body[5 : 5+n]
			if body[0]&2 != 0 {
				var end struct {
					Error *struct{ Code, Message string }
				}
				if err := json.Unmarshal(msg, &end); err != nil || end.Error == nil {
					t.Fatalf("end-stream %q: %v", msg, err)
				}
				return end.Error.Code, end.Error.Message
			}
			body = body[5+n:]
		}
		t.Fatalf("no end-stream message: status %d %q", resp.StatusCode, body)
	case strings.HasPrefix(contentType, "application/grpc-web"):
		hdr := resp.Header
		// Unless trailers-only, the status comes in a trailer envelope (flag 0x80).
		for len(body) >= 5 && hdr.Get("Grpc-Status") == "" {
			n := binary.BigEndian.Uint32(body[1:5])
			if body[0]&0x80 != 0 {
				mh, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(body[5:5+n], "\r\n"...)))).ReadMIMEHeader()
				if err != nil {
					t.Fatalf("trailers %q: %v", body[5:5+n], err)
				}
				hdr = http.Header(mh)
			}
			body = body[5+n:]
		}
		msg, _ := url.PathUnescape(hdr.Get("Grpc-Message"))
		code := map[string]string{"3": "invalid_argument", "13": "internal", "2": "unknown"}[hdr.Get("Grpc-Status")]
		if code == "" {
			code = "grpc-status " + strconv.Quote(hdr.Get("Grpc-Status"))
		}
		return code, msg
	default:
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("status %d, body %q: %v", resp.StatusCode, body, err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("unary error with HTTP status %d, want 400", resp.StatusCode)
		}
	}
	return e.Code, e.Message
}

// A request whose body ends inside an envelope, or before its
// Content-Length, is invalid_argument with a message naming what was cut,
// in every protocol and for unary and streaming RPCs of both services; the
// daemon goes on serving.
func TestTruncatedRequestBodies(t *testing.T) {
	srv := envdtest.Start(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	stat := &fspb.StatRequest{Path: "/"}
	statBytes, _ := proto.Marshal(stat)
	const (
		connectStream = "application/connect+proto"
		grpcWeb       = "application/grpc-web+proto"
		connectUnary  = "application/proto"
	)
	cases := []struct {
		name, path, ct string
		announced      int // -1: len(body)
		body           []byte
		msg            string
	}{
		{"unary short of Content-Length", "/filesystem.Filesystem/Stat", connectUnary, 100, bytes.Repeat([]byte{0}, 10),
			"truncated request body: ended after 10 of the 100 bytes of its Content-Length"},
		{"unary 3-byte body", "/filesystem.Filesystem/Stat", connectUnary, -1, []byte{0x0a, 0x05, 'a'}, ""},
		{"grpc-web unary 100 promised 10 sent", "/filesystem.Filesystem/Stat", grpcWeb, -1, envelope(100, make([]byte, 10)),
			"truncated envelope: its prefix promised a 100-byte message, the body ended after 10"},
		{"grpc-web unary 4 GiB promised", "/filesystem.Filesystem/Stat", grpcWeb, -1, envelope(1<<32-1, statBytes),
			fmt.Sprintf("truncated envelope: its prefix promised a 4294967295-byte message, the body ended after %d", len(statBytes))},
		{"grpc-web unary 3-byte body", "/filesystem.Filesystem/Stat", grpcWeb, -1, []byte{0, 0, 0},
			"truncated envelope: the body ended 3 bytes into a 5-byte envelope prefix"},
		{"grpc-web unary short of Content-Length", "/filesystem.Filesystem/Stat", grpcWeb, 200, envelope(uint32(len(statBytes)), statBytes),
			fmt.Sprintf("truncated request body: ended after %d of the 200 bytes of its Content-Length", 5+len(statBytes))},
	}
	for _, stream := range []string{"/filesystem.Filesystem/WatchDir", "/process.Process/Start"} {
		cases = append(cases, []struct {
			name, path, ct string
			announced      int
			body           []byte
			msg            string
		}{
			{"stream 100 promised 10 sent " + stream, stream, connectStream, -1, envelope(100, make([]byte, 10)),
				"truncated envelope: its prefix promised a 100-byte message, the body ended after 10"},
			{"stream 4 GiB promised " + stream, stream, connectStream, -1, envelope(1<<32-1, make([]byte, 10)),
				"truncated envelope: its prefix promised a 4294967295-byte message, the body ended after 10"},
			{"stream 3-byte body " + stream, stream, connectStream, -1, []byte{0, 0, 0},
				"truncated envelope: the body ended 3 bytes into a 5-byte envelope prefix"},
			{"stream short of Content-Length " + stream, stream, connectStream, 100, envelope(100, make([]byte, 10)),
				"truncated envelope: its prefix promised a 100-byte message, the body ended after 10"},
		}...)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.announced
			if n < 0 {
				n = len(tc.body)
			}
			resp, body := rawCall(t, addr, tc.path, tc.ct, n, tc.body)
			code, msg := wireError(t, tc.ct, resp, body)
			if code != "invalid_argument" || (tc.msg != "" && msg != tc.msg) {
				t.Fatalf("got %s %q, want invalid_argument %q", code, msg, tc.msg)
			}
			t.Logf("%s %q", code, msg)
		})
	}

	resp, err := srv.Client.Get(srv.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health after bad bodies: %v %v", resp, err)
	}
	resp.Body.Close()
	fs := filesystemconnect.NewFilesystemClient(srv.Client, srv.URL)
	if _, err := fs.Stat(t.Context(), stat); err != nil {
		t.Fatalf("Stat after bad bodies: %v", err)
	}
}
