package httpapi_test

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/volumes"
)

// newInit serves a bare Init handler, so tests can fill its hooks.
func newInit(t *testing.T) (*httpapi.Init, *execenv.Env, *auth.Token, func(body string) *http.Response) {
	env := execenv.NewEnv("")
	env.SetInternal("WRENN_SANDBOX", "true")
	tok := &auth.Token{}
	h := httpapi.NewInit(env, tok, "0.7.0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	post := func(body string) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL, "", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	return h, env, tok, post
}

func sha(s string) string { sum := sha512.Sum512([]byte(s)); return hex.EncodeToString(sum[:]) }

func TestInitBasics(t *testing.T) {
	_, env, tok, post := newInit(t)
	for _, body := range []string{"", "  ", "{}", "null", `{"defaultUser":"","defaultWorkdir":""}`, `{"accessToken":null}`} {
		resp := post(body)
		if resp.StatusCode != 204 || resp.Header.Get("X-Envd-Version") != "0.7.0" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%q: %d %v", body, resp.StatusCode, resp.Header)
		}
	}
	if d := env.Snapshot(); d.User != "root" || d.Workdir != "" {
		t.Fatalf("empty fields changed defaults: %+v", d)
	}
	for _, body := range []string{"{", `{"accessToken":""}`, `{"accessToken":"a\\u0041"}`, `{"accessToken":5}`,
		`{"timestamp":"yesterday"}`, `{"envVars":[1]}`, `[]`} {
		resp := post(body)
		if resp.StatusCode != 400 || resp.Header.Get("X-Envd-Version") != "0.7.0" {
			t.Fatalf("%q: %d, want 400 with version header", body, resp.StatusCode)
		}
	}
	if _, set := tok.Get(); set {
		t.Fatal("a rejected body set the token")
	}
}

func TestInitBodyReadWhateverContentType(t *testing.T) {
	env := execenv.NewEnv("")
	srv := httptest.NewServer(httpapi.NewInit(env, &auth.Token{}, "v", slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader(`{"defaultUser":"nobody"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || env.Snapshot().User != "nobody" {
		t.Fatalf("%d, user %q", resp.StatusCode, env.Snapshot().User)
	}
}

func TestInitEnvVarsReplaceAndProtect(t *testing.T) {
	_, env, _, post := newInit(t)
	post(`{"envVars":{"A":"1","B":"2","WRENN_SANDBOX":"hijack"}}`)
	v := env.Snapshot().Vars
	if v["A"] != "1" || v["B"] != "2" || v["WRENN_SANDBOX"] != "true" {
		t.Fatalf("%v", v)
	}
	post(`{"envVars":{"B":"3"}}`)
	v = env.Snapshot().Vars
	if _, has := v["A"]; has || v["B"] != "3" || v["WRENN_SANDBOX"] != "true" {
		t.Fatalf("replace: %v", v)
	}
	post(`{"defaultUser":"nobody"}`) // envVars absent: unchanged
	if env.Snapshot().Vars["B"] != "3" {
		t.Fatal("absent envVars cleared the variables")
	}
}

func TestInitTimestampOrdering(t *testing.T) {
	_, env, tok, post := newInit(t)
	post(`{"timestamp":"2026-01-01T00:00:10Z","defaultWorkdir":"/a"}`)
	post(`{"timestamp":"2026-01-01T00:00:05Z","defaultWorkdir":"/stale","accessToken":"t"}`)
	if env.Snapshot().Workdir != "/a" {
		t.Fatal("an older /init was applied")
	}
	if _, set := tok.Get(); set {
		t.Fatal("a stale /init set the token")
	}
	post(`{"timestamp":"2026-01-01T00:00:10Z","defaultWorkdir":"/equal"}`)
	if env.Snapshot().Workdir != "/equal" {
		t.Fatal("an equal timestamp must re-apply")
	}
	post(`{"timestamp":"2026-01-01T01:00:00+01:00","defaultWorkdir":"/offset"}`) // same instant as 00:00:00Z: older
	if env.Snapshot().Workdir != "/equal" {
		t.Fatal("timezone offset not honoured")
	}
	post(`{"defaultWorkdir":"/nots"}`)
	if env.Snapshot().Workdir != "/nots" {
		t.Fatal("a request without timestamp must apply")
	}
}

func TestInitTokenRules(t *testing.T) {
	h, _, tok, post := newInit(t)
	// No token, no MMDS hash: first-time setup.
	if post(`{"accessToken":"first"}`).StatusCode != 204 || !tok.Equal("first") {
		t.Fatal("first-time setup")
	}
	if post(`{"accessToken":"first","defaultUser":"x"}`).StatusCode != 204 {
		t.Fatal("same token again")
	}
	// Without MMDS (--isnotfc) a different token and a reset are refused.
	if r := post(`{"accessToken":"second"}`); r.StatusCode != 401 || !tok.Equal("first") {
		t.Fatalf("different token: %d", r.StatusCode)
	}
	if r := post(`{}`); r.StatusCode != 401 || !tok.Equal("first") {
		t.Fatalf("reset: %d", r.StatusCode)
	}
	// A stale request is still authenticated.
	if r := post(`{"timestamp":"2000-01-01T00:00:00Z","accessToken":"wrong"}`); r.StatusCode != 401 {
		t.Fatalf("stale with wrong token: %d", r.StatusCode)
	}

	hash, hashErr := "", error(nil)
	h.AccessTokenHash = func(context.Context) (string, error) { return hash, hashErr }
	hash = sha("second")
	if post(`{"accessToken":"second"}`).StatusCode != 204 || !tok.Equal("second") {
		t.Fatal("token matching the MMDS hash")
	}
	if post(`{"accessToken":"third"}`).StatusCode != 401 {
		t.Fatal("token not matching the MMDS hash")
	}
	if post(`{}`).StatusCode != 401 {
		t.Fatal("reset without the hash of empty")
	}
	hash = strings.ToUpper(sha(""))
	if post(`{}`).StatusCode != 204 {
		t.Fatal("authorised reset")
	}
	if _, set := tok.Get(); set {
		t.Fatal("authorised reset did not clear the token")
	}
	hash, hashErr = sha("x"), errors.New("mmds down")
	if post(`{"accessToken":"anything"}`).StatusCode != 204 {
		t.Fatal("MMDS error = no hash, and no token set: first-time setup")
	}
}

func TestInitErrorBodiesArePlainText(t *testing.T) {
	_, _, tok, _ := newInit(t)
	tok.Set("a")
	env := execenv.NewEnv("")
	srv := httptest.NewServer(httpapi.NewInit(env, tok, "1.2.3", slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	for body, msg := range map[string]string{`{}`: "access token reset not authorized", `{"accessToken":"b"}`: "access token validation failed"} {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || string(b) != msg || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
			resp.Header.Get("X-Envd-Version") != "1.2.3" {
			t.Errorf("%s: %d %q %v", body, resp.StatusCode, b, resp.Header)
		}
	}
}

func TestInitHooks(t *testing.T) {
	h, env, _, post := newInit(t)
	var mu sync.Mutex
	var calls []string
	note := func(s string) { mu.Lock(); calls = append(calls, s); mu.Unlock() }
	var clockSetTo time.Time
	h.Now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	h.SetClock = func(t time.Time) error { clockSetTo = t; note("clock"); return nil }
	h.AfterInit = func(context.Context) { note("after") }
	h.MountVolumes = func(_ context.Context, m []volumes.Volume, id string) error {
		note("mount " + m[0].Target + " " + m[0].Path + " " + id)
		return nil
	}
	h.InstallCABundle = func(string) error { return errors.New("bad pem") }
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	h.HostsPath = hosts

	post(`{"timestamp":"2026-01-01T00:00:00.01Z","volumeMounts":[{"nfs_target":"srv:/x","path":"/mnt/x"}],"lifecycleID":"L","hyperloopIP":"10.1.2.3"}`)
	if strings.Join(calls, ",") != "mount srv:/x /mnt/x L,after" {
		t.Fatalf("calls %v (10ms behind is not worth a clock jump)", calls)
	}
	if readFile(t, hosts) != "127.0.0.1 localhost\n10.1.2.3\tevents.wrenn.local\n10.1.2.3\tevents.e2b.local\n" ||
		env.Snapshot().Vars["WRENN_EVENTS_ADDRESS"] != "http://10.1.2.3" || env.Snapshot().Vars["E2B_EVENTS_ADDRESS"] != "http://10.1.2.3" {
		t.Fatalf("hyperloop: %q %v", readFile(t, hosts), env.Snapshot().Vars)
	}
	calls = nil
	post(`{"timestamp":"2026-01-01T00:00:01Z"}`)
	if strings.Join(calls, ",") != "clock,after" || !clockSetTo.Equal(time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)) {
		t.Fatalf("calls %v, clock %v", calls, clockSetTo)
	}
	calls = nil
	if r := post(`{"caBundle":"x","defaultUser":"applied-before"}`); r.StatusCode != 400 || env.Snapshot().User != "applied-before" {
		t.Fatalf("CA bundle failure: %d, user %q", r.StatusCode, env.Snapshot().User)
	}
	// A stale request still runs AfterInit (port forwarding restarts on every /init).
	calls = nil
	post(`{"timestamp":"2000-01-01T00:00:00Z","hyperloopIP":"not-an-ip"}`)
	if strings.Join(calls, ",") != "after" {
		t.Fatalf("stale: %v", calls)
	}
}

// Concurrent /init calls never interleave: each one's envVars and workdir are
// applied together, so the final state is one request's, never a mix.
func TestInitSerialized(t *testing.T) {
	_, env, _, post := newInit(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			n := string(rune('a' + i))
			b, _ := json.Marshal(map[string]any{"envVars": map[string]string{"N": n}, "defaultWorkdir": "/" + n})
			if r := post(string(b)); r.StatusCode != 204 {
				t.Errorf("%d", r.StatusCode)
			}
		})
	}
	wg.Wait()
	d := env.Snapshot()
	if d.Workdir != "/"+d.Vars["N"] {
		t.Fatalf("mixed state: workdir %q, N %q", d.Workdir, d.Vars["N"])
	}
}

func TestInitCancelledWhileWaiting(t *testing.T) {
	h, _, _, post := newInit(t)
	entered, release := make(chan struct{}), make(chan struct{})
	h.AfterInit = func(context.Context) { close(entered); <-release }
	go post(`{}`)
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest("POST", "/init", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	cancel()
	h.ServeHTTP(rec, req)
	close(release)
	if rec.Code != 503 || rec.Header().Get("X-Envd-Version") != "0.7.0" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}
