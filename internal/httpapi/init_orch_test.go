package httpapi_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/cabundle"
	"github.com/envd-dev/envd/internal/cabundle/catest"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/execenv"
	procpb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/gen/process/processconnect"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/volumes"
	"github.com/envd-dev/envd/internal/volumes/volumestest"
)

// postInit sends body to the Init handler behind srv and returns the answer.
func postInit(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestInitTimestampForms(t *testing.T) {
	h, env, _, post := newInit(t)
	var set []time.Time
	h.Now = func() time.Time { return time.Unix(0, 0) }
	h.SetClock = func(ts time.Time) error { set = append(set, ts); return nil }
	if r := post(`{"timestamp":"1700000000.5","defaultWorkdir":"/decimal"}`); r.StatusCode != 204 || env.Snapshot().Workdir != "/decimal" {
		t.Fatalf("decimal seconds: %d", r.StatusCode)
	}
	if len(set) != 1 || !set[0].Equal(time.Unix(1700000000, 500_000_000)) {
		t.Fatalf("clock set to %v", set)
	}
	// The same instant in RFC 3339 is equal, so it re-applies; a bit earlier is stale.
	if post(`{"timestamp":"2023-11-14T22:13:20.5Z","defaultWorkdir":"/rfc"}`); env.Snapshot().Workdir != "/rfc" {
		t.Fatal("equal instant in RFC 3339 did not re-apply")
	}
	if post(`{"timestamp":"1700000000.499999999","defaultWorkdir":"/stale"}`); env.Snapshot().Workdir != "/rfc" {
		t.Fatal("an older decimal timestamp applied")
	}
	for _, ok := range []string{`"1700000001"`, `"1700000002."`, `"1700000003.1234567891234"`, `"2023-11-14T23:00:00+01:00"`, `null`} {
		if r := post(`{"timestamp":` + ok + `}`); r.StatusCode != 204 {
			t.Errorf("%s: %d", ok, r.StatusCode)
		}
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, bad := range []string{`"yesterday"`, `"1700000000,5"`, `"-1"`, `"1.7e9"`, `""`, `"."`, `" 1700000000"`,
		`"99999999999999999999"`, `"9300000000"`, `1700000000`, `true`, `{}`} {
		resp, body := postInit(t, srv.URL, `{"timestamp":`+bad+`}`)
		if resp.StatusCode != 400 || !strings.Contains(body, `timestamp must be a string in RFC 3339 ("2006-01-02T15:04:05.999999999Z07:00") or decimal Unix seconds ("1700000000.5")`) ||
			resp.Header.Get("X-Envd-Version") != "0.7.0" {
			t.Errorf("%s: %d %q", bad, resp.StatusCode, body)
		}
	}
}

// The orchestrator reads X-Envd-Version from whatever /init answers.
func TestInitVersionOnEveryAnswer(t *testing.T) {
	h, _, tok, _ := newInit(t)
	h.InstallCABundle = func(string) error { return errors.New("no") }
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, c := range []struct {
		body   string
		status int
	}{
		{`{}`, 204},
		{`{`, 400},
		{`{"timestamp":"x"}`, 400},
		{`{"caBundle":"x"}`, 400},
		{`{"volumeMounts":[{"path":1}]}`, 400},
		{`{"accessToken":"set"}`, 204},
		{`{"accessToken":"other"}`, 401},
		{`{}`, 401},
	} {
		resp, b := postInit(t, srv.URL, c.body)
		if resp.StatusCode != c.status || resp.Header.Get("X-Envd-Version") != "0.7.0" {
			t.Errorf("%s: %d %q, version %q", c.body, resp.StatusCode, b, resp.Header.Get("X-Envd-Version"))
		}
	}
	if !tok.Equal("set") {
		t.Fatal("token")
	}
}

func TestInitHyperloopBothNames(t *testing.T) {
	h, env, _, post := newInit(t)
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.0.0.9 events.e2b.local\n"), 0o644)
	h.HostsPath = hosts
	post(`{"hyperloopIP":"fd00::5"}`)
	if got := readFile(t, hosts); got != "127.0.0.1 localhost\nfd00::5\tevents.wrenn.local\nfd00::5\tevents.e2b.local\n" {
		t.Fatalf("hosts %q", got)
	}
	v := env.Snapshot().Vars
	if v["WRENN_EVENTS_ADDRESS"] != "http://[fd00::5]" || v["E2B_EVENTS_ADDRESS"] != "http://[fd00::5]" {
		t.Fatalf("env %v", v)
	}
	// A repeated /init with the same address leaves the file alone.
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(hosts, old, old)
	post(`{"hyperloopIP":"fd00::5"}`)
	if st, _ := os.Stat(hosts); !st.ModTime().Equal(old) {
		t.Fatal("an unchanged hosts file was rewritten")
	}
}

// Without an installer or a mounter (--isnotfc for the CA) the fields are
// ignored, logged, and /init still succeeds.
func TestInitIgnoredFieldsStill204(t *testing.T) {
	_, _, _, post := newInit(t)
	if r := post(`{"caBundle":"x","volumeMounts":[{"nfs_target":"s:/a","path":"/mnt/a"}]}`); r.StatusCode != 204 {
		t.Fatalf("%d", r.StatusCode)
	}
}

// initWithVolumes serves an Init whose volumeMounts go to the real mount
// commands inside a private mount namespace.
func initWithVolumes(t *testing.T) (*volumestest.Namespace, *httptest.Server, *httpapi.Init) {
	ns := volumestest.New(t)
	h, _, _, _ := newInit(t)
	h.MountVolumes = volumestest.TmpfsMounter(ns).MountAll
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return ns, srv, h
}

func TestInitVolumeMounts(t *testing.T) {
	ns, srv, h := initWithVolumes(t)
	p := filepath.Join(t.TempDir(), "data")
	body := func(lifecycle string) string {
		return fmt.Sprintf(`{"lifecycleID":%q,"volumeMounts":[{"nfs_target":"10.0.0.1:/vol","path":%q}]}`, lifecycle, p)
	}
	for range 3 {
		if resp, b := postInit(t, srv.URL, body("L1")); resp.StatusCode != 204 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	if got := ns.Commands(); got != "findmnt --noheadings, mkdir -p, mount -v" {
		t.Fatalf("three /inits of one lifecycle ran %q", got)
	}
	if m := ns.Mounts(t, p); len(m) != 1 || m[0].Source != "10.0.0.1:/vol" {
		t.Fatalf("mounts %+v", m)
	}
	if resp, b := postInit(t, srv.URL, body("L2")); resp.StatusCode != 204 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got := ns.Commands(); got != "findmnt --noheadings, umount --force, mkdir -p, mount -v" {
		t.Fatalf("a new lifecycle ran %q", got)
	}
	if m := ns.Mounts(t, p); len(m) != 1 {
		t.Fatalf("mounts %+v", m)
	}

	// A failing mount: 400 with §18.6's text; fields before it stay applied.
	h.MountVolumes = func(ctx context.Context, vols []volumes.Volume, id string) error {
		m := volumestest.TmpfsMounter(ns)
		m.FSType, m.Options = "nfs", "vers=3"
		return m.MountAll(ctx, vols, id)
	}
	q := filepath.Join(t.TempDir(), "bad")
	resp, b := postInit(t, srv.URL, fmt.Sprintf(`{"defaultUser":"applied","volumeMounts":[{"nfs_target":"no-colon","path":%q}]}`, q))
	want := fmt.Sprintf("failed to setup NFS volumes: failed to mount NFS at %q: `mount -v -t nfs -o vers=3 no-colon %s` failed: exit status 32\n", q, q)
	if resp.StatusCode != 400 || !strings.HasPrefix(b, want) || !strings.Contains(b, "mount.nfs: remote share not in 'host:dir' format") ||
		resp.Header.Get("X-Envd-Version") != "0.7.0" || h.Env.Snapshot().User != "applied" {
		t.Fatalf("%d %q\nwant prefix %q", resp.StatusCode, b, want)
	}
}

// §18.6: the orchestrator gives each attempt 50 ms and retries. An attempt
// abandoned mid-mount still completes the mount, and the retry, queued on
// the /init lock, finds it in the ledger and answers at once.
func TestInitAbandonedAttemptCompletes(t *testing.T) {
	ns, srv, _ := initWithVolumes(t)
	p := filepath.Join(t.TempDir(), "data")
	body := fmt.Sprintf(`{"lifecycleID":"L","volumeMounts":[{"nfs_target":"s:/v","path":%q}]}`, p)
	mounting, release := make(chan struct{}), make(chan struct{})
	ns.Before = func(argv []string) {
		if argv[0] == "mount" {
			close(mounting)
			<-release
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, strings.NewReader(body))
	first := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	<-mounting
	cancel() // the orchestrator's per-attempt deadline
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first attempt: %v", err)
	}
	retry := make(chan *http.Response, 1)
	go func() { resp, _ := postInit(t, srv.URL, body); retry <- resp }()
	close(release)
	if resp := <-retry; resp.StatusCode != 204 {
		t.Fatalf("retry: %d", resp.StatusCode)
	}
	if got := ns.Commands(); got != "findmnt --noheadings, mkdir -p, mount -v" {
		t.Fatalf("ran %q: the retry must not mount again", got)
	}
	if m := ns.Mounts(t, p); len(m) != 1 {
		t.Fatalf("mounts %+v", m)
	}
}

func TestInitCABundle(t *testing.T) {
	h, _, _, _ := newInit(t)
	dir := t.TempDir()
	in := &cabundle.Installer{Bundle: filepath.Join(dir, "ca-certificates.crt"), Copy: filepath.Join(dir, "copy/e2b-ca.crt"), Log: h.Log}
	h.InstallCABundle = in.Install
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, b := postInit(t, srv.URL, fmt.Sprintf(`{"caBundle":%q}`, catest.New(t, "A").PEM))
	if resp.StatusCode != 400 || !strings.HasPrefix(b, "failed to install CA bundle: open CA bundle: ") || !strings.Contains(b, "no such file or directory") {
		t.Fatalf("missing store: %d %q", resp.StatusCode, b)
	}
	os.WriteFile(in.Bundle, []byte("# roots\n"), 0o644)
	a, c := catest.New(t, "A").PEM, catest.New(t, "C").PEM
	for range 3 {
		if resp, b := postInit(t, srv.URL, fmt.Sprintf(`{"caBundle":%q}`, a)); resp.StatusCode != 204 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	if got := readFile(t, in.Bundle); got != "# roots\n"+a {
		t.Fatalf("after three /inits: %q", got)
	}
	if resp, _ := postInit(t, srv.URL, fmt.Sprintf(`{"caBundle":%q}`, c)); resp.StatusCode != 204 || readFile(t, in.Bundle) != "# roots\n"+c {
		t.Fatalf("rotation: %d %q", resp.StatusCode, readFile(t, in.Bundle))
	}
	if resp, b := postInit(t, srv.URL, `{"caBundle":"not pem"}`); resp.StatusCode != 400 || !strings.HasPrefix(b, "failed to install CA bundle: invalid CA bundle: ") {
		t.Fatalf("invalid: %d %q", resp.StatusCode, b)
	}
}

// runCurl runs curl through envd's process service and returns its output
// and exit code.
func runCurl(t *testing.T, c *client, args ...string) (string, int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdin := false
	stream, err := processconnect.NewProcessClient(c.s.Client, c.s.URL).Start(ctx, &procpb.StartRequest{
		Process: &procpb.ProcessConfig{Cmd: "curl", Args: append([]string{"-sS", "--max-time", "20"}, args...)},
		Stdin:   &stdin,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	exit := int32(-1)
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		out.Write(ev.GetData().GetStderr())
		if end := ev.GetEnd(); end != nil {
			exit = end.GetExitCode()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	return out.String(), exit
}

// A curl started through envd trusts a TLS server whose certificate the CA
// handed to /init signed, through the system trust store envd appended it to
// (here under a temp root; curl is pointed at it as it would find
// /etc/ssl/certs/ca-certificates.crt by default).
func TestInitCABundleCurlTrusts(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl missing (scripts/install-deps installs it):", err)
	}
	root := t.TempDir()
	bundle := filepath.Join(root, cabundle.DefaultBundle)
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	// Seeded with an unrelated root: curl refuses a store with none.
	seed := catest.New(t, "unrelated root").PEM
	os.WriteFile(bundle, []byte(seed), 0o644)
	c := &client{t, envdtest.Start(t, func(cfg *config.Config) { cfg.TrustRoot = root })}

	ca := catest.New(t, "envd test CA")
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "trusted\n") }))
	tlsSrv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server}}
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // curl's refused handshake
	tlsSrv.StartTLS()
	defer tlsSrv.Close()

	c.init(fmt.Sprintf(`{"envVars":{"CURL_CA_BUNDLE":%q}}`, bundle))
	if out, exit := runCurl(t, c, tlsSrv.URL); exit != 60 {
		t.Fatalf("before the CA is installed curl must refuse the certificate: exit %d, %q", exit, out)
	}
	for range 2 {
		c.init(fmt.Sprintf(`{"envVars":{"CURL_CA_BUNDLE":%q},"caBundle":%q}`, bundle, ca.PEM))
	}
	if out, exit := runCurl(t, c, tlsSrv.URL); exit != 0 || out != "trusted\n" {
		t.Fatalf("after /init caBundle: exit %d, %q", exit, out)
	}
	if got := readFile(t, bundle); got != seed+ca.PEM {
		t.Fatalf("store %q", got)
	}
	if got := readFile(t, filepath.Join(root, cabundle.DefaultCopy)); got != ca.PEM {
		t.Fatalf("copy %q", got)
	}
}

// The daemon forks mount through its reaper: the real mount.nfs answers a
// malformed export, and /init passes its words on.
func TestInitVolumeMountsWired(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/sbin/mount.nfs"); err != nil {
		t.Fatal("mount.nfs missing (scripts/install-deps installs nfs-common):", err)
	}
	c := start(t)
	p := filepath.Join(t.TempDir(), "vol")
	resp, b := c.do("POST", "/init", strings.NewReader(fmt.Sprintf(`{"volumeMounts":[{"nfs_target":"no-colon","path":%q}]}`, p)))
	want := fmt.Sprintf("failed to setup NFS volumes: failed to mount NFS at %q: `mount -v -t nfs -o %s no-colon %s` failed: exit status 32\n", p, volumes.Options, p)
	if resp.StatusCode != 400 || !strings.HasPrefix(string(b), want) || !strings.Contains(string(b), "remote share not in 'host:dir' format") ||
		resp.Header.Get("X-Envd-Version") != "0.7.0" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
	if resp, _ := c.do("GET", "/health", nil); resp.StatusCode != 204 && resp.StatusCode != 200 {
		t.Fatalf("health %d", resp.StatusCode)
	}
}

// BenchmarkInitRepeatedUnchanged is the orchestrator's repeated /init with
// every field it sends, volumes and CA included (real mounts in a private
// namespace, a real trust store in a temp dir), one connection per request
// as its client makes. envd-bench's "init" row measures the same over the
// real binary without the two fields that --isnotfc and this kernel rule out.
func BenchmarkInitRepeatedUnchanged(b *testing.B) {
	ns := volumestest.New(b)
	env := execenv.NewEnv("")
	h := httpapi.NewInit(env, &auth.Token{}, "0.7.0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.MountVolumes = volumestest.TmpfsMounter(ns).MountAll
	dir := b.TempDir()
	in := &cabundle.Installer{Bundle: filepath.Join(dir, "ca.crt"), Copy: filepath.Join(dir, "copy.crt"), Log: h.Log}
	os.WriteFile(in.Bundle, []byte(catest.New(b, "root").PEM), 0o644)
	h.InstallCABundle = in.Install
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(hosts, nil, 0o644)
	h.HostsPath = hosts
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	ca := catest.New(b, "proxy").PEM
	vol := filepath.Join(dir, "vol")
	body := func() string {
		return fmt.Sprintf(`{"timestamp":%q,"lifecycleID":"L","hyperloopIP":"10.0.0.1","envVars":{"A":"1"},"defaultUser":"root",`+
			`"caBundle":%q,"volumeMounts":[{"nfs_target":"10.0.0.1:/vol","path":%q}]}`, time.Now().Format(time.RFC3339Nano), ca, vol)
	}
	post := func() {
		resp, err := client.Post(srv.URL, "application/json", strings.NewReader(body()))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 204 {
			b.Fatal(resp.Status)
		}
	}
	post() // the first one mounts and installs
	if ns.Commands() == "" {
		b.Fatal("the first /init mounted nothing")
	}
	b.ResetTimer()
	for b.Loop() {
		post()
	}
	b.StopTimer()
	if got := ns.Commands(); got != "" {
		b.Fatalf("repeated /init ran %q", got)
	}
}
