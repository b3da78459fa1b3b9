package httpapi

import (
	"errors"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/execenv"
)

func TestNegotiateEncoding(t *testing.T) {
	for _, c := range []struct {
		header   string
		want     string
		rejected bool
		err      bool
	}{
		{"", encIdentity, false, false},
		{"   ", encIdentity, false, false},
		{"gzip", encGzip, false, false},
		{"GZIP", encGzip, false, false},
		{"gzip, deflate, br", encGzip, false, false},
		{"br", encIdentity, false, false},
		{"identity", encIdentity, false, false},
		{"gzip;q=0.5, identity", encIdentity, false, false},
		{"gzip;q=1, identity;q=0.5", encGzip, false, false},
		{"gzip;q=0", encIdentity, false, false},
		{"*", encIdentity, false, false},
		{"*;q=0", "", true, true},
		{"*;q=0, identity", encIdentity, false, false},
		{"*;q=0, gzip", encGzip, true, false},
		{"identity;q=0", "", true, true},
		{"identity;q=0, gzip", encGzip, true, false},
		{"identity;q=0, *", encGzip, true, false},
		{"identity;q=0, br", "", true, true},
		{"gzip;q=abc", encGzip, false, false},
		{"gzip; Q=0.0", encIdentity, false, false},
		{"br;q=1, gzip;q=0.1", encGzip, false, false},
		{",,gzip,,", encGzip, false, false},
	} {
		got, rejected, err := negotiateEncoding(c.header)
		if got != c.want || rejected != c.rejected || (err != nil) != c.err {
			t.Errorf("%q: got (%q, %v, %v), want (%q, %v, err=%v)", c.header, got, rejected, err, c.want, c.rejected, c.err)
		}
	}
}

func FuzzAcceptEncoding(f *testing.F) {
	for _, s := range []string{"", "gzip", "identity;q=0", "*;q=0, gzip;q=0.5", "gzip;q=NaN", "x;q=1e400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		enc, rejected, err := negotiateEncoding(header)
		switch {
		case err != nil:
			if !rejected || enc != "" || !errors.Is(err, errNoAcceptableEncoding) {
				t.Fatalf("%q: error %v with enc %q rejected %v", header, err, enc, rejected)
			}
		case enc != encIdentity && enc != encGzip:
			t.Fatalf("%q: chose %q", header, enc)
		case enc == encIdentity && rejected:
			t.Fatalf("%q: chose identity although the client rejected it", header)
		}
		for _, e := range parseAcceptEncoding(header) {
			if e.q < 0 || e.q > 1 || e.name == "" || e.name != strings.ToLower(e.name) {
				t.Fatalf("%q: bad entry %+v", header, e)
			}
		}
	})
}

func TestMetadataFromHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("X-Metadata-Owner", "alice")
	h.Add("x-metadata-PROJECT", "p1")
	h.Add("x-metadata-PROJECT", "ignored second value")
	h.Set("X-Metadata-", "empty key ignored")
	h.Set("X-Other", "not metadata")
	md, err := metadataFromHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(md) != 2 || md["owner"] != "alice" || md["project"] != "p1" {
		t.Fatalf("got %v", md)
	}
	if md, err := metadataFromHeaders(http.Header{}); err != nil || md != nil {
		t.Fatalf("no headers: %v %v", md, err)
	}
}

func TestValidateMetadata(t *testing.T) {
	long := strings.Repeat("k", 246)
	for name, c := range map[string]struct {
		md map[string]string
		ok bool
	}{
		"plain":               {map[string]string{"a": "b c ~"}, true},
		"key 246 bytes":       {map[string]string{long: ""}, true},
		"key 247 bytes":       {map[string]string{long + "k": ""}, false},
		"control char value":  {map[string]string{"a": "x\ty"}, false},
		"non-ASCII value":     {map[string]string{"a": "é"}, false},
		"DEL in key":          {map[string]string{"a\x7f": "v"}, false},
		"exactly 4096 total":  {map[string]string{"k": strings.Repeat("v", 4096-9-1)}, true},
		"one byte over total": {map[string]string{"k": strings.Repeat("v", 4096-9)}, false},
		"sum over several": {map[string]string{
			"a": strings.Repeat("v", 2000), "b": strings.Repeat("v", 2000), "c": strings.Repeat("v", 100),
		}, false},
	} {
		if err := validateMetadata(c.md); (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", name, err, c.ok)
		}
	}
}

func FuzzMetadataHeaders(f *testing.F) {
	f.Add("Owner", "alice", "project", "p1")
	f.Add("", "", "a\x00", "\xff")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		h := http.Header{}
		h[metadataHeaderPrefix+k1] = []string{v1}
		h[http.CanonicalHeaderKey(metadataHeaderPrefix+k2)] = []string{v2}
		md, err := metadataFromHeaders(h)
		if err != nil {
			return
		}
		total := 0
		for k, v := range md {
			if k == "" || len(k) > maxMetadataKey || !printableASCII(k) || !printableASCII(v) || k != strings.ToLower(k) {
				t.Fatalf("accepted bad entry %q=%q", k, v)
			}
			total += 9 + len(k) + len(v)
		}
		if total > maxMetadataTotal {
			t.Fatalf("accepted %d bytes of metadata", total)
		}
	})
}

func TestPartFileName(t *testing.T) {
	for _, c := range []struct {
		header, want string
		err          bool
	}{
		{`form-data; name="file"; filename="dir/sub/a.txt"`, "dir/sub/a.txt", false},
		{`form-data; name="file"; filename="/abs/b.txt"`, "/abs/b.txt", false},
		{`form-data; name="file"; filename*=utf-8''h%C3%A9llo.txt`, "héllo.txt", false},
		{`form-data; name="file"`, "", true},
		{`form-data; name="file"; filename=""`, "", true},
		{`garbage;;;`, "", true},
	} {
		got, err := partFileName(c.header)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%q: got %q, %v", c.header, got, err)
		}
	}
}

// FuzzMultipartFileName feeds arbitrary Content-Disposition filenames through
// the parse-and-resolve path an upload takes: it must never panic, and a
// path it accepts is absolute and free of NUL bytes.
func FuzzMultipartFileName(f *testing.F) {
	for _, s := range []string{`form-data; name="file"; filename="a/b.txt"`, `form-data; filename="~/x"`,
		`form-data; filename="~root/x"`, `form-data; filename="../../etc/passwd"`, `form-data; filename="a\x00b"`} {
		f.Add(s)
	}
	files := &Files{Env: execenv.NewEnv("")}
	u := &execenv.User{Name: "user", Home: "/home/user"}
	f.Fuzz(func(t *testing.T, disposition string) {
		name, err := partFileName(disposition)
		if err != nil {
			return
		}
		if name == "" {
			t.Fatal("empty filename accepted")
		}
		p, err := files.resolvePath(name, u)
		if err != nil {
			return
		}
		if !filepath.IsAbs(p) || strings.IndexByte(p, 0) >= 0 {
			t.Fatalf("%q resolved to %q", name, p)
		}
		if !filepath.IsAbs(name) && !strings.HasPrefix(name, "~") && p != filepath.Clean(p) {
			t.Fatalf("relative %q resolved to uncleaned %q", name, p)
		}
	})
}

func TestClockNeedsSet(t *testing.T) {
	host := time.Unix(1800000000, 0)
	for _, c := range []struct {
		off  time.Duration
		want bool
	}{
		{0, false}, {-50 * time.Millisecond, false}, {-51 * time.Millisecond, true},
		{5 * time.Second, false}, {5*time.Second + 1, true}, {-time.Hour, true},
	} {
		if got := ClockNeedsSet(host.Add(c.off), host); got != c.want {
			t.Errorf("guest off by %v: %v, want %v", c.off, got, c.want)
		}
	}
}

func TestRewriteHosts(t *testing.T) {
	in := "127.0.0.1\tlocalhost\n10.0.0.9 events.wrenn.local # old\n::1 localhost ip6-localhost\n10.0.0.8 other events.WRENN.local"
	got := string(RewriteHosts([]byte(in), "events.wrenn.local", netip.MustParseAddr("192.168.1.5")))
	want := "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n192.168.1.5\tevents.wrenn.local\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
