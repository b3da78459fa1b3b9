package fsfreeze_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/fsfreeze"
	"github.com/envd-dev/envd/internal/httpapi"
)

// nsEnv carries the image path into the re-executed test binary, which runs
// TestInPrivateNamespace inside its own mount namespace.
const nsEnv = "ENVD_FSFREEZE_IMAGE"

// TestFreezeLoopExt4 makes an ext4 image, then re-runs this test binary in
// a private mount namespace where TestInPrivateNamespace mounts the image
// and freezes only that. Nothing here ever targets the host's filesystems.
func TestFreezeLoopExt4(t *testing.T) {
	if os.Getenv(nsEnv) != "" {
		t.Skip("the outer half; this process is the inner one")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces and loop devices")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("needs loop devices: %v", err)
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if out, err := exec.Command(mkfs, "-q", "-F", img, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInPrivateNamespace$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), nsEnv+"="+img)
	// Go makes / recursively private in the new namespace before exec.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("inner test:\n%s", out)
	if err != nil {
		t.Fatalf("inner test failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestInPrivateNamespace") {
		t.Fatal("inner test did not run")
	}
}

func TestInPrivateNamespace(t *testing.T) {
	img := os.Getenv(nsEnv)
	if img == "" {
		t.Skip("runs only inside the mount namespace TestFreezeLoopExt4 creates")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", "-t", "ext4", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = fsfreeze.New(mnt).Thaw(context.Background())
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	// Refuse to go on unless mnt is the loop filesystem, not the host's.
	var st, rootSt unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat("/", &rootSt); err != nil {
		t.Fatal(err)
	}
	if st.Dev == rootSt.Dev || unix.Major(st.Dev) != 7 {
		t.Fatalf("%s is not on a loop device (dev %d:%d); refusing to freeze", mnt, unix.Major(st.Dev), unix.Minor(st.Dev))
	}

	t.Run("domain", func(t *testing.T) {
		fs := fsfreeze.New(mnt)
		for range 2 { // the second meets EBUSY
			if err := fs.Freeze(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		done := startWrite(t, filepath.Join(mnt, "domain"))
		assertBlocked(t, done)
		for range 2 { // the second meets EINVAL
			if err := fs.Thaw(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		waitDone(t, done)
	})

	t.Run("http", func(t *testing.T) {
		fs := fsfreeze.New(mnt)
		tok := &auth.Token{}
		tok.Set("secret")
		mux := http.NewServeMux()
		mux.Handle("POST /fsfreeze", &httpapi.FSFreeze{FS: fs})
		mux.Handle("POST /fsthaw", &httpapi.FSThaw{FS: fs})
		srv := httptest.NewServer(auth.RequireToken(tok, func(*http.Request) bool { return false }, mux))
		defer srv.Close()
		post := func(path, token string) *http.Response {
			req, _ := http.NewRequest("POST", srv.URL+path, nil)
			if token != "" {
				req.Header.Set("X-Access-Token", token)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		for _, p := range []string{"/fsfreeze", "/fsthaw"} {
			if resp := post(p, ""); resp.StatusCode != 401 {
				t.Errorf("%s without token = %d, want 401", p, resp.StatusCode)
			}
			if resp := post(p, "wrong"); resp.StatusCode != 401 {
				t.Errorf("%s with a wrong token = %d, want 401", p, resp.StatusCode)
			}
		}
		// Still writable: the refused freeze did nothing.
		waitDone(t, startWrite(t, filepath.Join(mnt, "after-401")))

		for range 2 {
			resp := post("/fsfreeze", "secret")
			if resp.StatusCode != 204 || resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("/fsfreeze = %d %q, want 204 no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
			}
		}
		done := startWrite(t, filepath.Join(mnt, "http"))
		assertBlocked(t, done)

		// The lock is taken (as by a live upgrade staging its binary): a
		// client that leaves gets 503 and nothing changes.
		release, err := fs.Hold(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		rec := httptest.NewRecorder()
		(&httpapi.FSFreeze{FS: fs}).ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "POST", "/fsfreeze", nil))
		cancel()
		release()
		if rec.Code != 503 || rec.Body.Len() != 0 {
			t.Errorf("contended /fsfreeze with a departing client = %d %q, want 503 empty", rec.Code, rec.Body)
		}

		for range 2 {
			if resp := post("/fsthaw", "secret"); resp.StatusCode != 204 {
				t.Fatalf("/fsthaw = %d, want 204", resp.StatusCode)
			}
		}
		waitDone(t, done)
	})
}

func TestNoTargetRefused(t *testing.T) {
	fs := fsfreeze.New("")
	if err := fs.Freeze(context.Background()); !errors.Is(err, fsfreeze.ErrNoTarget) {
		t.Errorf("freeze without target: %v", err)
	}
	if err := fs.Thaw(context.Background()); !errors.Is(err, fsfreeze.ErrNoTarget) {
		t.Errorf("thaw without target: %v", err)
	}
	rec := httptest.NewRecorder()
	(&httpapi.FSFreeze{FS: fs}).ServeHTTP(rec, httptest.NewRequest("POST", "/fsfreeze", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"code":500`) {
		t.Errorf("/fsfreeze without target = %d %s, want 500 JSON", rec.Code, rec.Body)
	}
}

func TestMissingTargetIs500(t *testing.T) {
	fs := fsfreeze.New(filepath.Join(t.TempDir(), "missing"))
	rec := httptest.NewRecorder()
	(&httpapi.FSThaw{FS: fs}).ServeHTTP(rec, httptest.NewRequest("POST", "/fsthaw", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "open ") {
		t.Errorf("/fsthaw on a missing path = %d %s, want 500 JSON naming the open", rec.Code, rec.Body)
	}
}

// startWrite creates path, writes and fsyncs it in a goroutine.
func startWrite(t *testing.T, path string) <-chan error {
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(path)
		if err == nil {
			_, err = f.WriteString("data")
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		done <- err
	}()
	return done
}

// assertBlocked checks the write has not finished after a while; on a
// frozen filesystem it cannot, however slow the machine.
func assertBlocked(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("write finished on a frozen filesystem: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}

func waitDone(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("write still blocked 60s after the thaw")
	}
}
