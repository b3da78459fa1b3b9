// Package cabundle installs the CA certificates /init hands over (caBundle,
// §18.6) into the system trust store, so that TLS clients in the sandbox
// trust the orchestrator's egress proxy.
//
// E2B's envd appends the bundle once per process and forgets it on restart,
// so a restarted or live-upgraded envd appends it again and a rotated CA
// stays trusted. Here the bundle is appended only when the trust store does
// not already hold it, and the previously installed bundle is known from the
// copy kept on disk, so a rotation removes the old one whichever envd
// installed it.
package cabundle

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Default locations on Debian-like systems, which E2B's templates are.
const (
	DefaultBundle = "/etc/ssl/certs/ca-certificates.crt"
	DefaultCopy   = "/usr/local/share/ca-certificates/e2b-ca.crt"
)

// ErrInvalid marks a bundle that holds no usable certificate.
var ErrInvalid = errors.New("invalid CA bundle")

// Installer owns what envd added to the trust store.
type Installer struct {
	// Bundle is the system trust store; it must exist (a sandbox whose
	// image has none is told so rather than given a store of one CA).
	Bundle string
	// Copy keeps the installed PEM for update-ca-certificates and for the
	// next envd of this boot, which reads it to know what it replaces.
	Copy string
	Log  *slog.Logger

	mu   sync.Mutex
	last string // PEM installed by this process, normalized
}

// Install puts pemText into the trust store. The same bundle again is a
// no-op without any file access, so repeated /init calls stay cheap.
func (in *Installer) Install(pemText string) error {
	want := normalize(pemText)
	in.mu.Lock()
	defer in.mu.Unlock()
	if want == in.last {
		return nil
	}
	if err := validate(want); err != nil {
		return err
	}
	prev := in.last
	if prev == "" {
		if b, err := os.ReadFile(in.Copy); err == nil {
			prev = normalize(string(b))
		}
	}
	if err := in.update(want, prev); err != nil {
		return err
	}
	in.last = want
	in.writeCopy(want)
	return nil
}

// Installed returns the bundle this process installed, "" if none.
func (in *Installer) Installed() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.last
}

// update appends want unless the store already holds it, and removes prev
// when it is a different bundle still in the store.
func (in *Installer) update(want, prev string) error {
	// Resolved, so that a rewrite replaces the file and not a symlink to it.
	target, err := filepath.EvalSymlinks(in.Bundle)
	if err != nil {
		return fmt.Errorf("open CA bundle: %w", err)
	}
	cur, err := os.ReadFile(target)
	if err != nil {
		return fmt.Errorf("open CA bundle: %w", err)
	}
	stale := prev != "" && prev != want && bytes.Contains(cur, []byte(prev))
	has := bytes.Contains(cur, []byte(want))
	switch {
	case stale:
		next := bytes.ReplaceAll(cur, []byte(prev), nil)
		if !has {
			next = appendPEM(next, want)
		}
		return rewrite(target, next)
	case has:
		return nil
	}
	// Never created: O_APPEND without O_CREAT.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_APPEND|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open CA bundle: %w", err)
	}
	out := []byte(want)
	if len(cur) > 0 && cur[len(cur)-1] != '\n' {
		// The certificate must not be glued onto the store's last line.
		out = append([]byte{'\n'}, out...)
	}
	_, err = f.Write(out)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to CA bundle: %w", err)
	}
	return nil
}

// appendPEM adds pem after b on a line of its own.
func appendPEM(b []byte, pem string) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return append(b, pem...)
}

// rewrite replaces path atomically, keeping its mode and owner, so a TLS
// client reading the store never sees it half written.
func rewrite(path string, content []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("open CA bundle: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "ca-bundle-*")
	if err != nil {
		return fmt.Errorf("rewrite CA bundle: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	sys := st.Sys().(*syscall.Stat_t)
	_ = tmp.Chown(int(sys.Uid), int(sys.Gid))
	err = tmp.Chmod(st.Mode().Perm())
	if err == nil {
		_, err = tmp.Write(content)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("rewrite CA bundle: %w", err)
	}
	return nil
}

// writeCopy failing only loses the memory of what to remove at the next
// rotation after a restart, so it is logged, not returned.
func (in *Installer) writeCopy(pem string) {
	if in.Copy == "" {
		return
	}
	err := os.MkdirAll(filepath.Dir(in.Copy), 0o755)
	if err == nil {
		err = os.WriteFile(in.Copy, []byte(pem), 0o644)
	}
	if err != nil && in.Log != nil {
		in.Log.Warn("keep a copy of the installed CA bundle", "path", in.Copy, "err", err)
	}
}

// normalize ends the bundle with exactly one newline, as E2B's envd does,
// so that the same bundle sent with or without one matches.
func normalize(s string) string {
	b := bytes.TrimRight([]byte(s), "\r\n")
	return string(b) + "\n"
}

// validate accepts PEM whose blocks are all certificates, at least one.
func validate(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("%w: PEM block %d is %q, not CERTIFICATE", ErrInvalid, n+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("%w: certificate %d: %w", ErrInvalid, n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w: no PEM certificate found", ErrInvalid)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return fmt.Errorf("%w: data after certificate %d is not PEM", ErrInvalid, n)
	}
	return nil
}
