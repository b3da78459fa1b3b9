package fsapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/envd-dev/envd/internal/envdtest"
	"github.com/envd-dev/envd/internal/fsapi"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
)

// postJSON sends one Connect unary call as the early Python SDK did: JSON,
// with the given User-Agent ("" keeps Go's).
func postJSON(t *testing.T, srv *envdtest.Server, method, ua string, body any) (map[string]any, http.Header) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", srv.URL+"/filesystem.Filesystem/"+method, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	resp, err := srv.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s = %d %s", method, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %v in %s", method, err, raw)
	}
	return out, resp.Header
}

func keys(v any) []string {
	m, _ := v.(map[string]any)
	return slices.Sorted(maps.Keys(m))
}

var legacyKeys = []string{"name", "path", "type"}

func TestLegacyDownConversion(t *testing.T) {
	srv := envdtest.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "f.txt")
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}

	stat, hdr := postJSON(t, srv, "Stat", "connect-python", map[string]any{"path": file})
	if got := keys(stat["entry"]); !slices.Equal(got, legacyKeys) {
		t.Errorf("legacy Stat entry keys = %v, want %v", got, legacyKeys)
	}
	if hdr.Get(fsapi.LegacyHeader) != "true" {
		t.Errorf("legacy Stat: %s = %q", fsapi.LegacyHeader, hdr.Get(fsapi.LegacyHeader))
	}
	list, hdr := postJSON(t, srv, "ListDir", "connect-python", map[string]any{"path": dir})
	entries, _ := list["entries"].([]any)
	if len(entries) != 2 {
		t.Fatalf("legacy ListDir entries = %v", list)
	}
	for _, e := range entries {
		if got := keys(e); !slices.Equal(got, legacyKeys) {
			t.Errorf("legacy ListDir entry keys = %v, want %v", got, legacyKeys)
		}
	}
	if hdr.Get(fsapi.LegacyHeader) != "true" {
		t.Error("legacy ListDir without the legacy header")
	}
	mk, hdr := postJSON(t, srv, "MakeDir", "connect-python", map[string]any{"path": filepath.Join(dir, "new")})
	if got := keys(mk["entry"]); !slices.Equal(got, legacyKeys) || hdr.Get(fsapi.LegacyHeader) != "true" {
		t.Errorf("legacy MakeDir entry keys = %v, header %q", got, hdr.Get(fsapi.LegacyHeader))
	}

	// Current SDKs, and a connect-python that says its version, see it all.
	for _, ua := range []string{"", "connect-python/1.0", "e2b-python-sdk/1.5.0"} {
		stat, hdr := postJSON(t, srv, "Stat", ua, map[string]any{"path": file})
		got := keys(stat["entry"])
		for _, k := range []string{"size", "mode", "permissions", "owner", "group", "modifiedTime"} {
			if !slices.Contains(got, k) {
				t.Errorf("UA %q: Stat entry lacks %s: %v", ua, k, got)
			}
		}
		if hdr.Get(fsapi.LegacyHeader) != "" {
			t.Errorf("UA %q got the legacy header", ua)
		}
		list, _ := postJSON(t, srv, "ListDir", ua, map[string]any{"path": dir})
		for _, e := range list["entries"].([]any) {
			if !slices.Contains(keys(e), "permissions") {
				t.Errorf("UA %q: ListDir entry trimmed: %v", ua, e)
			}
		}
	}

	// Errors are not converted.
	req, _ := http.NewRequest("POST", srv.URL+"/filesystem.Filesystem/Stat", bytes.NewReader([]byte(`{"path":"`+filepath.Join(dir, "missing")+`"}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "connect-python")
	resp, err := srv.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get(fsapi.LegacyHeader) != "" {
		t.Errorf("legacy Stat of a missing file = %d, header %q; want 404 unmarked", resp.StatusCode, resp.Header.Get(fsapi.LegacyHeader))
	}
}

func TestLegacyWatchEventsLackEntry(t *testing.T) {
	srv := envdtest.Start(t)
	for _, tc := range []struct {
		ua        string
		wantEntry bool
	}{{"connect-python", false}, {"connect-python/1.0", true}, {"", true}} {
		for _, c := range codecs {
			t.Run(tc.ua+"/"+c.name, func(t *testing.T) {
				var hdr []string
				if tc.ua != "" {
					hdr = []string{"User-Agent", tc.ua}
				}
				fs := client(srv, c.opts, hdr...)
				dir := t.TempDir()

				st := openWatch(t, fs, &fspb.WatchDirRequest{Path: dir, IncludeEntry: true})
				if got := st.ResponseHeader().Get(fsapi.LegacyHeader); (got == "true") == tc.wantEntry {
					t.Errorf("WatchDir legacy header = %q", got)
				}
				mustWrite(t, filepath.Join(dir, "a"), "x")
				evs := until(t, st, named("a", fspb.EventType_EVENT_TYPE_CREATE))
				ev := evs[len(evs)-1]
				if (ev.Entry != nil) != tc.wantEntry {
					t.Errorf("WatchDir event entry = %v, want present=%v", ev.Entry, tc.wantEntry)
				}

				cw, err := fs.CreateWatcher(t.Context(), &fspb.CreateWatcherRequest{Path: dir, IncludeEntry: true})
				if err != nil {
					t.Fatal(err)
				}
				mustWrite(t, filepath.Join(dir, "b"), "x")
				var got []*fspb.FilesystemEvent
				for !hasEvent(got, "b", fspb.EventType_EVENT_TYPE_CREATE) {
					resp, err := fs.GetWatcherEvents(t.Context(), &fspb.GetWatcherEventsRequest{WatcherId: cw.GetWatcherId()})
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, resp.GetEvents()...)
					if len(resp.GetEvents()) == 0 {
						time.Sleep(10 * time.Millisecond) // polling pace, not an assertion
					}
				}
				for _, ev := range got {
					if (ev.Entry != nil) != tc.wantEntry {
						t.Errorf("polled event %v: entry present=%v, want %v", ev, ev.Entry != nil, tc.wantEntry)
					}
				}
			})
		}
	}
}
