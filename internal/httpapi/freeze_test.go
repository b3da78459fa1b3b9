package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/cgroup"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/freeze"
	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/memcollapse"
	"github.com/envd-dev/envd/internal/testkit"
)

// freezeTree makes root/{user,ptys,envd,app} in the host's cgroup2 mount,
// with envd's cgroup inside the root so that hierarchy sweeps run.
func freezeTree(t *testing.T) (root string, f *freeze.Freezer) {
	t.Helper()
	testkit.RequireCgroup2(t)
	root, err := os.MkdirTemp(testkit.CgroupMount, "envd-httpapi-freeze-")
	if err != nil {
		t.Fatal(err)
	}
	groups := []string{"user", "ptys", "envd", "app"}
	t.Cleanup(func() {
		for _, g := range groups {
			_ = cgroup.SetFreeze(filepath.Join(root, g), false)
			_ = os.Remove(filepath.Join(root, g))
		}
		if err := os.Remove(root); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	for _, g := range groups {
		if err := os.Mkdir(filepath.Join(root, g), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root, freeze.New(freeze.Config{Root: root, Self: filepath.Join(root, "envd")})
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func isFrozen(t *testing.T, dir string) bool {
	t.Helper()
	on, err := cgroup.FreezeRequested(dir)
	if err != nil {
		t.Fatal(err)
	}
	return on
}

func TestFreezeHierarchyAuditThenInitThaw(t *testing.T) {
	root, f := freezeTree(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	init := httpapi.NewInit(execenv.NewEnv(""), &auth.Token{}, "0.7.0", log)
	init.OnAuthorized = httpapi.InitThaw(f, log)
	fh := &httpapi.Freeze{Freezer: f, Log: log}

	rec := serve(fh, httptest.NewRequest("POST", "/freeze?mode=hierarchy&maxWaitMs=30000", nil))
	if rec.Code != 200 {
		t.Fatalf("/freeze = %d %s", rec.Code, rec.Body)
	}
	var res map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	// Root children app envd ptys user: envd is ours, the pair is written
	// first, app by the walk.
	if res["mode"] != "hierarchy" || res["visited"] != 4.0 || res["requested"] != 3.0 || res["frozen"] != 3.0 || len(res) != 12 {
		t.Errorf("/freeze = %s", rec.Body)
	}
	if !isFrozen(t, filepath.Join(root, "app")) || isFrozen(t, filepath.Join(root, "envd")) {
		t.Fatal("hierarchy freeze froze the wrong cgroups")
	}

	// A body /init cannot decode neither audits nor thaws.
	rec = serve(init, httptest.NewRequest("POST", "/init", strings.NewReader("{bad")))
	if rec.Code != 400 || rec.Header().Get("X-Envd-Freeze-Audit") != "" || !isFrozen(t, filepath.Join(root, "app")) {
		t.Fatalf("undecodable /init = %d audit %q", rec.Code, rec.Header().Get("X-Envd-Freeze-Audit"))
	}

	rec = serve(init, httptest.NewRequest("POST", "/init", nil))
	if rec.Code != 204 {
		t.Fatalf("/init = %d", rec.Code)
	}
	const want = `{"visited":4,"frozen":3,"escaped":0,"violations":0,"truncated":false}`
	if got := rec.Header().Get("X-Envd-Freeze-Audit"); got != want {
		t.Errorf("X-Envd-Freeze-Audit = %q, want %q", got, want)
	}
	for _, g := range []string{"app", "user", "ptys"} {
		if isFrozen(t, filepath.Join(root, g)) {
			t.Errorf("%s still frozen after /init", g)
		}
	}
	rec = serve(init, httptest.NewRequest("POST", "/init", nil))
	if rec.Header().Get("X-Envd-Freeze-Audit") != "" {
		t.Error("audit header after a thaw")
	}
}

func TestFreezeClientLeavingDuringWaitIs503(t *testing.T) {
	root, f := freezeTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := serve(&httpapi.Freeze{Freezer: f}, httptest.NewRequestWithContext(ctx, "POST", "/freeze?maxWaitMs=5000", nil))
	if rec.Code != 503 || rec.Body.Len() != 0 {
		t.Errorf("/freeze with a departed client = %d %q, want an empty 503", rec.Code, rec.Body)
	}
	// The cgroups are frozen nonetheless, and /unfreeze undoes it.
	if !isFrozen(t, filepath.Join(root, "user")) {
		t.Error("user not frozen after the 503")
	}
	if rec := serve(&httpapi.Unfreeze{Freezer: f}, httptest.NewRequest("POST", "/unfreeze", nil)); rec.Code != 204 {
		t.Errorf("/unfreeze = %d", rec.Code)
	}
	if isFrozen(t, filepath.Join(root, "user")) {
		t.Error("user still frozen after /unfreeze")
	}
	// No maxWaitMs: nothing to wait for, 204 even for a departed client.
	rec = serve(&httpapi.Freeze{Freezer: f}, httptest.NewRequestWithContext(ctx, "POST", "/freeze?maxWaitMs=0", nil))
	if rec.Code != 204 {
		t.Errorf("/freeze?maxWaitMs=0 = %d, want 204", rec.Code)
	}
	_ = f.Thaw(context.Background())
}

func TestFreezeLockHeldClientLeavesIs503(t *testing.T) {
	root, f := freezeTree(t)
	f.Lock() // a live upgrade between its freeze and the execve
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	rec := serve(&httpapi.Freeze{Freezer: f}, httptest.NewRequestWithContext(ctx, "POST", "/freeze", nil))
	f.Unlock()
	if rec.Code != 503 || rec.Body.Len() != 0 {
		t.Errorf("/freeze behind a held lock = %d %q, want an empty 503", rec.Code, rec.Body)
	}
	if isFrozen(t, filepath.Join(root, "user")) {
		t.Error("a freeze that never got the lock froze")
	}
}

func TestFreezeUnknownModeIsLegacy(t *testing.T) {
	root, f := freezeTree(t)
	rec := serve(&httpapi.Freeze{Freezer: f}, httptest.NewRequest("POST", "/freeze?mode=Hierarchy&maxWaitMs=30000", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"mode":"legacy"`) || !strings.Contains(rec.Body.String(), `"visited":0`) {
		t.Errorf("/freeze?mode=Hierarchy = %d %s, want a legacy sweep", rec.Code, rec.Body)
	}
	if isFrozen(t, filepath.Join(root, "app")) {
		t.Error("legacy sweep froze app")
	}
	_ = f.Thaw(context.Background())
}

func TestCollapseCancelledIs500(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := serve(&httpapi.Collapse{Collapser: &memcollapse.Collapser{ProcSelf: "/proc/self"}}, httptest.NewRequestWithContext(ctx, "POST", "/collapse", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"code":500`) {
		t.Errorf("/collapse with an ended request = %d %s, want 500 JSON", rec.Code, rec.Body)
	}
}

// A thaw that cannot see the whole tree is dirty: /unfreeze answers 500 and
// the freeze stays marked active (the watchdog keeps trying) until a thaw
// completes.
func TestUnfreezeTruncatedWalkIs500(t *testing.T) {
	root, f := freezeTree(t)
	const n = 8200 // beyond the 8192 cgroups a walk visits
	dir := filepath.Join(root, "app")
	t.Cleanup(func() {
		for i := range n {
			_ = os.Remove(filepath.Join(dir, "c"+strconv.Itoa(i)))
		}
	})
	for i := range n {
		if err := os.Mkdir(filepath.Join(dir, "c"+strconv.Itoa(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Freeze(context.Background(), freeze.Options{}); err != nil {
		t.Fatal(err)
	}
	rec := serve(&httpapi.Unfreeze{Freezer: f}, httptest.NewRequest("POST", "/unfreeze", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "truncated") {
		t.Errorf("/unfreeze over a truncated walk = %d %s, want 500 JSON", rec.Code, rec.Body)
	}
	if !f.Active() {
		t.Error("a dirty thaw cleared the active freeze")
	}
	if isFrozen(t, filepath.Join(root, "user")) {
		t.Error("even a dirty thaw must thaw user")
	}
	for i := range n {
		_ = os.Remove(filepath.Join(dir, "c"+strconv.Itoa(i)))
	}
	if rec := serve(&httpapi.Unfreeze{Freezer: f}, httptest.NewRequest("POST", "/unfreeze", nil)); rec.Code != 204 {
		t.Errorf("/unfreeze after the tree shrank = %d %s", rec.Code, rec.Body)
	}
	if f.Active() {
		t.Error("a clean thaw left the freeze active")
	}
}
