package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/auth"
)

// Every route × {no token, wrong token, right token}, once /init set one.
func TestAuthMatrix(t *testing.T) {
	c := start(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "f.txt")
	os.WriteFile(f, []byte("data"), 0o644)
	c.init(`{"accessToken":"secret"}`)

	const unauthorized = "unauthorized access, please provide a valid access token or method signing if supported"
	type route struct {
		method, path, ctype, body string
		// status with the right token; the messages for missing and wrong ones
		ok                   int
		noTokenMsg, wrongMsg string
	}
	routes := []route{
		{"GET", "/health", "", "", 200, "", ""},
		{"GET", "/files?path=" + url.QueryEscape(f), "", "", 200, "missing signature query parameter", "access token present in header but does not match"},
		{"POST", "/files?path=" + url.QueryEscape(f), "application/octet-stream", "new", 200, "missing signature query parameter", "access token present in header but does not match"},
		{"GET", "/metrics", "", "", 200, unauthorized, unauthorized},
		{"GET", "/envs", "", "", 200, unauthorized, unauthorized},
		{"POST", "/snapshot/prepare", "", "", 204, unauthorized, unauthorized},
		{"POST", "/process.Process/List", "application/json", "{}", 200, unauthorized, unauthorized},
		{"POST", "/filesystem.Filesystem/Stat", "application/json", fmt.Sprintf(`{"path":%q}`, f), 200, unauthorized, unauthorized},
		{"POST", "/filesystem.Filesystem/ListDir", "application/json", fmt.Sprintf(`{"path":%q}`, dir), 200, unauthorized, unauthorized},
	}
	for _, r := range routes {
		for _, tc := range []struct {
			name, token string
		}{{"none", ""}, {"wrong", "not-the-token"}, {"right", "secret"}} {
			var hdr []string
			if r.ctype != "" {
				hdr = append(hdr, "Content-Type", r.ctype)
			}
			if tc.token != "" {
				hdr = append(hdr, "X-Access-Token", tc.token)
			}
			resp, body := c.do(r.method, r.path, strings.NewReader(r.body), hdr...)
			switch {
			case tc.name == "right" || r.noTokenMsg == "":
				if resp.StatusCode != r.ok {
					t.Errorf("%s %s with %s token: %d %s, want %d", r.method, r.path, tc.name, resp.StatusCode, body, r.ok)
				}
			case tc.name == "none":
				wantJSONError(t, resp, body, 401, r.noTokenMsg)
			default:
				wantJSONError(t, resp, body, 401, r.wrongMsg)
			}
		}
	}

	// /init authenticates through its body, not the header.
	resp, body := c.do("POST", "/init", strings.NewReader(`{}`), "X-Access-Token", "secret")
	if resp.StatusCode != 401 || string(body) != "access token reset not authorized" {
		t.Errorf("/init reset with header token: %d %q", resp.StatusCode, body)
	}
	resp, body = c.do("POST", "/init", strings.NewReader(`{"accessToken":"wrong"}`))
	if resp.StatusCode != 401 || string(body) != "access token validation failed" {
		t.Errorf("/init wrong token: %d %q", resp.StatusCode, body)
	}
	c.init(`{"accessToken":"secret","envVars":{"A":"1"}}`)
}

func TestAuthOpenWithoutToken(t *testing.T) {
	c := start(t)
	for _, p := range []string{"/metrics", "/envs"} {
		if resp, body := c.do("GET", p, nil); resp.StatusCode != 200 {
			t.Errorf("%s without any token set: %d %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := c.do("POST", "/snapshot/prepare", nil); resp.StatusCode != 204 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("/snapshot/prepare: %d", resp.StatusCode)
	}
}

func TestUnknownBasicUser(t *testing.T) {
	c := start(t)
	for _, p := range []string{"/health", "/process.Process/List"} {
		req, _ := http.NewRequest("POST", c.s.URL+p, strings.NewReader("{}"))
		if p == "/health" {
			req.Method = "GET"
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("no-such-user-envd", "")
		resp, err := c.s.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || strings.TrimSpace(buf.String()) != `{"code":"unauthenticated","message":"invalid username: 'no-such-user-envd'"}` {
			t.Errorf("%s: %d %s", p, resp.StatusCode, buf.String())
		}
	}
}

func TestSignedURLs(t *testing.T) {
	u := addUser(t)
	c := start(t)
	c.init(`{"accessToken":"tok"}`)
	p := filepath.Join(u.Home, "signed.txt")
	os.WriteFile(p, []byte("signed content"), 0o644)

	signed := func(path, op, user string, exp *int64) string {
		v := url.Values{"path": {path}, "signature": {auth.Signature(path, op, user, "tok", exp)}}
		if user != "" {
			v.Set("username", user)
		}
		if exp != nil {
			v.Set("signature_expiration", fmt.Sprint(*exp))
		}
		return "/files?" + v.Encode()
	}
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()

	if resp, body := c.do("GET", signed(p, "read", u.Name, &future), nil); resp.StatusCode != 200 || string(body) != "signed content" {
		t.Fatalf("valid read: %d %s", resp.StatusCode, body)
	}
	if resp, body := c.do("GET", signed(p, "read", "", nil), nil); resp.StatusCode != 200 {
		t.Fatalf("valid read, no user, no expiry: %d %s", resp.StatusCode, body)
	}
	// Relative path signed as sent, resolved against the user's home.
	if resp, body := c.do("GET", signed("signed.txt", "read", u.Name, nil), nil); resp.StatusCode != 200 || string(body) != "signed content" {
		t.Fatalf("relative: %d %s", resp.StatusCode, body)
	}
	w := filepath.Join(u.Home, "up", "w.txt")
	resp, body := c.do("POST", signed(w, "write", u.Name, &future), strings.NewReader("uploaded"), "Content-Type", "application/octet-stream")
	wantEntries(t, resp, body, w)
	if uid, _, _ := owner(t, w); uid != u.UID {
		t.Fatalf("signed upload owned by %d", uid)
	}

	resp, body = c.do("GET", signed(p, "read", u.Name, &past), nil)
	if resp.StatusCode != 401 || strings.TrimSpace(string(body)) != `{"code":401,"message":"signature is already expired"}` {
		t.Fatalf("expired: %d %s", resp.StatusCode, body)
	}
	tampered := strings.Replace(signed(p, "read", u.Name, &future), "signed.txt", "other.txt", 1)
	resp, body = c.do("GET", tampered, nil)
	wantJSONError(t, resp, body, 401, "invalid signature")
	tampered = strings.Replace(signed(p, "read", u.Name, &future), "username="+u.Name, "username=root", 1)
	resp, body = c.do("GET", tampered, nil)
	wantJSONError(t, resp, body, 401, "invalid signature")
	resp, body = c.do("POST", signed(w, "read", u.Name, nil), strings.NewReader("x"), "Content-Type", "application/octet-stream")
	wantJSONError(t, resp, body, 401, "invalid signature")
	if readFile(t, w) != "uploaded" {
		t.Fatal("rejected upload changed the file")
	}
}
