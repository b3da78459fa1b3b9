package fsapi_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/envd-dev/envd/internal/envdtest"
	fspb "github.com/envd-dev/envd/internal/gen/filesystem"
)

// Far more watches than a user may hold inotify instances, started and
// dropped one after another, all start: an instance that a watch neither
// closed nor handed back to the pool would use up the limit here.
func TestWatchDirChurnBeyondInstanceLimit(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Skipf("no inotify instance limit to read: %v", err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	n := min(limit+100, 2000)
	srv := envdtest.Start(t)
	fs := client(srv, nil)
	dir := t.TempDir()
	for i := range n {
		ctx, cancel := context.WithCancel(t.Context())
		st, err := fs.WatchDir(ctx, &fspb.WatchDirRequest{Path: dir})
		if err != nil {
			cancel()
			t.Fatalf("watch %d of %d: %v", i+1, n, err)
		}
		if !st.Receive() || st.Msg().GetStart() == nil {
			cancel()
			t.Fatalf("watch %d of %d: no start event: %v", i+1, n, st.Err())
		}
		cancel()
		st.Close()
	}
}
