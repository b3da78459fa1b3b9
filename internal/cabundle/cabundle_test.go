package cabundle_test

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envd-dev/envd/internal/cabundle"
	"github.com/envd-dev/envd/internal/cabundle/catest"
)

const system = "# system roots\n-----BEGIN CERTIFICATE-----\nc3lzdGVt\n-----END CERTIFICATE-----\n"

// store is a trust store and copy location inside a temp dir.
func store(t *testing.T, content string) (*cabundle.Installer, string) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "etc/ssl/certs/ca-certificates.crt")
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	if err := os.WriteFile(bundle, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return installer(dir), bundle
}

func installer(dir string) *cabundle.Installer {
	return &cabundle.Installer{
		Bundle: filepath.Join(dir, "etc/ssl/certs/ca-certificates.crt"),
		Copy:   filepath.Join(dir, "usr/local/share/ca-certificates/e2b-ca.crt"),
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAppendedOnce(t *testing.T) {
	in, bundle := store(t, system)
	a := catest.New(t, "A").PEM
	for _, v := range []string{a, strings.TrimSuffix(a, "\n"), a + "\n\n", a} {
		if err := in.Install(v); err != nil {
			t.Fatal(err)
		}
	}
	if got := read(t, bundle); got != system+a {
		t.Fatalf("bundle:\n%s", got)
	}
	// A restarted envd (or one after a live upgrade) has no memory of it,
	// and must still not append it twice.
	dir := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(bundle))))
	if err := installer(dir).Install(a); err != nil {
		t.Fatal(err)
	}
	if got := read(t, bundle); got != system+a {
		t.Fatalf("after a restart the bundle holds it twice:\n%s", got)
	}
	if read(t, in.Copy) != a || in.Installed() != a {
		t.Fatal("copy or Installed() wrong")
	}
}

func TestRotationRemovesTheOld(t *testing.T) {
	in, bundle := store(t, system)
	a, b, c := catest.New(t, "A").PEM, catest.New(t, "B").PEM, catest.New(t, "C").PEM
	if err := in.Install(a); err != nil {
		t.Fatal(err)
	}
	if err := in.Install(b); err != nil {
		t.Fatal(err)
	}
	if got := read(t, bundle); got != system+b {
		t.Fatalf("after rotation:\n%s", got)
	}
	st, _ := os.Stat(bundle)
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
	// The next envd of this boot learns what to remove from the copy.
	dir := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(bundle))))
	if err := installer(dir).Install(c); err != nil {
		t.Fatal(err)
	}
	if got := read(t, bundle); got != system+c {
		t.Fatalf("rotation after restart:\n%s", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(bundle))
	if len(entries) != 1 {
		t.Fatalf("leftover temp files: %v", entries)
	}
}

func TestMissingStoreIsNotCreated(t *testing.T) {
	dir := t.TempDir()
	in := installer(dir)
	err := in.Install(catest.New(t, "A").PEM)
	if err == nil || !strings.HasPrefix(err.Error(), "open CA bundle: ") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(in.Bundle); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the store was created")
	}
	if in.Installed() != "" {
		t.Fatal("a failed install is remembered")
	}
}

func TestInvalidBundles(t *testing.T) {
	in, bundle := store(t, system)
	for _, v := range []string{"", "hello", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", catest.New(t, "A").PEM + "trailing junk"} {
		if err := in.Install(v); !errors.Is(err, cabundle.ErrInvalid) {
			t.Errorf("%q: %v", v, err)
		}
	}
	if read(t, bundle) != system {
		t.Fatal("an invalid bundle changed the store")
	}
}

func TestSeveralCertificatesAndNoTrailingNewline(t *testing.T) {
	in, bundle := store(t, strings.TrimSuffix(system, "\n"))
	two := catest.New(t, "A").PEM + catest.New(t, "B").PEM
	if err := in.Install(two); err != nil {
		t.Fatal(err)
	}
	if got := read(t, bundle); got != system+two {
		t.Fatalf("bundle:\n%s", got)
	}
}

// Some images make the store a symlink; a rotation rewrites the file it
// points at and keeps the link.
func TestSymlinkedStore(t *testing.T) {
	in, real := store(t, system)
	link := filepath.Join(filepath.Dir(real), "link.crt")
	os.Symlink(real, link)
	in.Bundle = link
	a, b := catest.New(t, "A").PEM, catest.New(t, "B").PEM
	if err := in.Install(a); err != nil {
		t.Fatal(err)
	}
	if err := in.Install(b); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(link); err != nil || l != real || read(t, real) != system+b {
		t.Fatalf("link %q %v, content %q", l, err, read(t, real))
	}
}
