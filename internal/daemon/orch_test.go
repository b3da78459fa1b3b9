package daemon_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/client"
	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/config"
	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/mmds/mmdstest"
	"github.com/envd-dev/envd/internal/testkit"
)

// orchRoute is one request to the daemon, with the token the test holds.
func orchPost(t *testing.T, s *envdtest.Server, path, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Access-Token", token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// cgroupRoot is a fresh directory of the cgroup2 mount, for --cgroup-root.
func cgroupRoot(t *testing.T) string {
	t.Helper()
	testkit.RequireCgroup2(t)
	root := filepath.Join(testkit.CgroupMount, "envd-orch-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Only the groups are removed: a cgroup the daemon left under one makes
	// the removal of root fail.
	t.Cleanup(func() {
		for _, g := range cgroup.Groups() {
			_ = cgroup.SetFreeze(filepath.Join(root, string(g)), false)
			_ = os.WriteFile(filepath.Join(root, string(g), "cgroup.kill"), []byte("1"), 0)
		}
		for _, g := range cgroup.Groups() {
			for range 200 {
				if os.Remove(filepath.Join(root, string(g))) == nil {
					break
				}
				time.Sleep(10 * time.Millisecond) // killed tasks leave asynchronously
			}
		}
		if err := os.Remove(root); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return root
}

func frozenReq(t *testing.T, dir string) bool {
	t.Helper()
	on, err := cgroup.FreezeRequested(dir)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

// runTagged runs sh -c script over the wire and returns its stdout.
func runTagged(t *testing.T, s *envdtest.Server, token, tag, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := s.NewClient(t, client.WithToken(token)).Run(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", script}, Tag: tag})
	if err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	return string(res.Stdout)
}

func TestFreezeUnfreezeInitThawOverTheWire(t *testing.T) {
	root := cgroupRoot(t)
	s := envdtest.Start(t, func(c *config.Config) {
		c.NoCgroups = false
		c.CgroupRoot = root
	})
	user, ptys := filepath.Join(root, "user"), filepath.Join(root, "ptys")
	envdDir := filepath.Join(root, "envd")

	resp, body := orchPost(t, s, "/freeze", "", "")
	if resp.StatusCode != 204 || body != "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("/freeze = %d %q cache %q, want an empty 204 no-store", resp.StatusCode, body, resp.Header.Get("Cache-Control"))
	}
	if !frozenReq(t, user) || !frozenReq(t, ptys) || frozenReq(t, envdDir) {
		t.Fatal("/freeze did not freeze exactly user and ptys")
	}
	// The orchestrator's reclaim shell runs while the workload is frozen.
	if out := runTagged(t, s, "", "_system", "echo reclaimed"); out != "reclaimed\n" {
		t.Errorf("_system process output %q", out)
	}

	for _, q := range []string{"maxWaitMs=30000", "maxWaitMs=30000&mode=bogus", "maxWaitMs=30000&mode=hierarchy&maxCgroups=3"} {
		resp, body := orchPost(t, s, "/freeze?"+q, "", "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !strings.HasSuffix(body, "}\n") {
			t.Fatalf("/freeze?%s = %d %q %q", q, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatal(err)
		}
		want := []string{"allowlisted", "failed", "frozen", "mode", "notFrozen", "preFrozen", "requested",
			"sweepMs", "truncated", "unobservable", "visited", "waitMs"}
		if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, want) {
			t.Errorf("/freeze?%s keys = %v, want %v", q, got, want)
		}
		// envd here is not inside its cgroup root (--isnotfc on a shared
		// machine), so hierarchy is refused and reported as legacy.
		if m["mode"] != "legacy" || m["requested"] != 2.0 || m["frozen"] != 2.0 || m["notFrozen"] != 0.0 {
			t.Errorf("/freeze?%s = %s", q, body)
		}
	}
	for _, q := range []string{"maxWaitMs=abc", "maxCgroups=1.5", "maxWaitMs=99999999999999999999"} {
		resp, body := orchPost(t, s, "/freeze?"+q, "", "")
		if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.HasPrefix(body, "Invalid format for parameter") {
			t.Errorf("/freeze?%s = %d %q", q, resp.StatusCode, body)
		}
	}

	// /init thaws; no audit after a legacy freeze.
	resp, _ = orchPost(t, s, "/init", "", "")
	if resp.StatusCode != 204 || resp.Header.Get("X-Envd-Freeze-Audit") != "" {
		t.Fatalf("/init = %d audit %q", resp.StatusCode, resp.Header.Get("X-Envd-Freeze-Audit"))
	}
	if frozenReq(t, user) || frozenReq(t, ptys) {
		t.Fatal("/init did not thaw")
	}
	for range 2 {
		if resp, body := orchPost(t, s, "/unfreeze", "", ""); resp.StatusCode != 204 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("/unfreeze = %d %q", resp.StatusCode, body)
		}
	}

	// With a token: every new route needs it; /init thaws only once it
	// accepted the token, stale or not.
	const tok = "0123abcd"
	ts := time.Now()
	if resp, body := orchPost(t, s, "/init", "", `{"accessToken":"`+tok+`","timestamp":"`+ts.Format(time.RFC3339Nano)+`"}`); resp.StatusCode != 204 {
		t.Fatalf("/init with token = %d %q", resp.StatusCode, body)
	}
	for _, p := range []string{"/freeze", "/unfreeze", "/fsfreeze", "/fsthaw", "/collapse"} {
		for _, bad := range []string{"", "wrong"} {
			resp, body := orchPost(t, s, p, bad, "")
			if resp.StatusCode != 401 || !strings.Contains(body, `"code":401`) {
				t.Errorf("%s with token %q = %d %q, want 401 JSON", p, bad, resp.StatusCode, body)
			}
		}
	}
	if frozenReq(t, user) {
		t.Fatal("/freeze without a token froze")
	}
	if resp, _ := orchPost(t, s, "/freeze", tok, ""); resp.StatusCode != 204 {
		t.Fatalf("/freeze with token = %d", resp.StatusCode)
	}
	if resp, _ := orchPost(t, s, "/init", "", `{"accessToken":"nope"}`); resp.StatusCode != 401 {
		t.Fatalf("/init with a wrong token = %d", resp.StatusCode)
	}
	if !frozenReq(t, user) {
		t.Fatal("an unauthorised /init thawed")
	}
	stale := ts.Add(-time.Hour).Format(time.RFC3339Nano)
	if resp, _ := orchPost(t, s, "/init", "", `{"accessToken":"`+tok+`","timestamp":"`+stale+`"}`); resp.StatusCode != 204 {
		t.Fatalf("stale /init = %d", resp.StatusCode)
	}
	if frozenReq(t, user) {
		t.Fatal("a stale but authorised /init did not thaw")
	}

	// Collapse with the token: six keys, chunks = collapsed+alreadyHuge+skipped.
	resp, body = orchPost(t, s, "/collapse", tok, "")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("/collapse = %d %q", resp.StatusCode, body)
	}
	var c map[string]float64
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(c)); !slices.Equal(got, []string{"alreadyHuge", "chunks", "collapsed", "elapsedMs", "regions", "skipped"}) {
		t.Errorf("/collapse keys = %v", got)
	}
	if c["regions"] == 0 || c["chunks"] != c["collapsed"]+c["alreadyHuge"]+c["skipped"] {
		t.Errorf("/collapse = %s", body)
	}

	// FIFREEZE of / is refused outside a VM, and the daemon stays healthy.
	for _, p := range []string{"/fsfreeze", "/fsthaw"} {
		resp, body := orchPost(t, s, p, tok, "")
		if resp.StatusCode != 500 || !strings.Contains(body, "refused") {
			t.Errorf("%s under --isnotfc = %d %q, want a 500 refusal", p, resp.StatusCode, body)
		}
	}
	if r, err := s.Client.Get(s.URL + "/health"); err != nil || r.StatusCode != 200 {
		t.Fatalf("health after the orchestrator routes: %v %v", r, err)
	} else {
		r.Body.Close()
	}
}

// Without cgroups (--no-cgroups) the freeze reports what it cannot see.
func TestFreezeWithoutCgroupsUnobservable(t *testing.T) {
	s := envdtest.Start(t)
	resp, body := orchPost(t, s, "/freeze?maxWaitMs=1000&mode=hierarchy", "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("/freeze = %d %q", resp.StatusCode, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if m["mode"] != "legacy" || m["unobservable"] != 2.0 || m["requested"] != 2.0 || m["notFrozen"] != 0.0 {
		t.Errorf("/freeze without cgroups = %s", body)
	}
	if resp, _ := orchPost(t, s, "/unfreeze", "", ""); resp.StatusCode != 204 {
		t.Errorf("/unfreeze without cgroups = %d", resp.StatusCode)
	}
}

// A daemon that plays a VM on this machine (IsNotFC false after parsing, as
// startInVM does) still has no /fsfreeze target: only the flags give one, so
// no test can freeze the root filesystem of the machine it runs on. Only
// /fsthaw is asked: with "/" as its target it would answer 204 (FITHAW of a
// filesystem that is not frozen is EINVAL, which counts as thawed), whereas a
// regression asked /fsfreeze would freeze this machine.
func TestFSFreezeRefusedWhenOnlyPlayingAVM(t *testing.T) {
	s, _ := startInVM(t, mmdstest.New(t, map[string]any{"instanceID": "sbx-1"}))
	resp, body := orchPost(t, s, "/fsthaw", "", "")
	if resp.StatusCode != 500 || !strings.Contains(body, "refused") {
		t.Errorf("/fsthaw = %d %q, want a 500 refusal", resp.StatusCode, body)
	}
	if c, err := config.Parse(nil, nil); err != nil || c.FreezeRoot != "/" {
		t.Errorf("config.Parse without --isnotfc: FreezeRoot %q, %v; want /", c.FreezeRoot, err)
	}
	if c, err := config.Parse([]string{"--isnotfc"}, nil); err != nil || c.FreezeRoot != "" {
		t.Errorf("config.Parse --isnotfc: FreezeRoot %q, %v; want empty", c.FreezeRoot, err)
	}
}
