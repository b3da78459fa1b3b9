package mmds

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/envd-dev/envd/internal/execenv"
)

// RepollBudget is how long a re-poll after /init keeps trying (§11.1): after
// a snapshot restore the new sandbox id shows up in MMDS shortly.
const RepollBudget = 60 * time.Second

// Backoff between failed polls: §11.1 polls every 50 ms at boot; backing off
// to a second keeps a VM without MMDS from spinning.
const (
	firstDelay = 50 * time.Millisecond
	maxDelay   = time.Second
)

// Service keeps the sandbox identity from MMDS published.
type Service struct {
	Client *Client
	Env    *execenv.Env
	RunDir string // "/run": files go to RunDir/wrenn and RunDir/e2b
	Log    *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc // of the running re-poll
	last   Metadata
}

type alias struct{ dir, prefix string }

// aliases are the Wrenn names (§11) and the E2B ones SDKs and templates read.
func aliases() []alias { return []alias{{"wrenn", "WRENN_"}, {"e2b", "E2B_"}} }

// WriteMode publishes WRENN_SANDBOX / E2B_SANDBOX (true inside Firecracker)
// as env defaults and as read-only files (§11.2).
func (s *Service) WriteMode(inVM bool) error {
	v := fmt.Sprint(inVM)
	for _, n := range aliases() {
		s.Env.SetInternal(n.prefix+"SANDBOX", v)
		if err := s.writeFile(n.dir, "."+n.prefix+"SANDBOX", v, 0o444); err != nil {
			return err
		}
	}
	return nil
}

// Apply publishes md's ids as env defaults and files. Empty ids are skipped:
// Wrenn's MMDS may lack a key, and an empty value would hide the last good one.
// The files are written first and the variables set together afterwards, so
// a client that sees one id in /envs or a process's environment sees all of
// them, and their files.
func (s *Service) Apply(md Metadata) error {
	s.mu.Lock()
	s.last = md
	s.mu.Unlock()
	vars := map[string]string{}
	for _, n := range aliases() {
		for _, kv := range []struct{ key, val string }{
			{n.prefix + "SANDBOX_ID", md.InstanceID},
			{n.prefix + "TEMPLATE_ID", md.EnvID},
		} {
			if kv.val == "" {
				continue
			}
			if err := s.writeFile(n.dir, "."+kv.key, kv.val, 0o666); err != nil {
				return err
			}
			vars[kv.key] = kv.val
		}
	}
	s.Env.SetInternals(vars)
	return nil
}

// Last is the metadata of the last successful poll.
func (s *Service) Last() Metadata {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Poll fetches until the first success or until ctx ends, then applies it.
func (s *Service) Poll(ctx context.Context) (Metadata, error) {
	delay := firstDelay
	for attempt := 1; ; attempt++ {
		md, err := s.Client.Get(ctx)
		if err == nil {
			if err := s.Apply(md); err != nil {
				return md, err
			}
			s.Log.Info("read MMDS", "instanceID", md.InstanceID, "envID", md.EnvID, "attempts", attempt)
			return md, nil
		}
		if attempt == 1 || attempt%20 == 0 {
			s.Log.Debug("MMDS not ready", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return Metadata{}, fmt.Errorf("poll MMDS: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*3/2, maxDelay)
	}
}

// Repoll starts a background poll with RepollBudget, replacing a running
// one, for /init's AfterInit hook. It returns at once; done is closed when
// the poll ends (tests wait on it).
func (s *Service) Repoll(ctx context.Context) (done <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RepollBudget)
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.cancel = cancel
	s.mu.Unlock()
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer cancel()
		if _, err := s.Poll(ctx); err != nil {
			s.Log.Warn("re-poll MMDS after /init", "err", err)
		}
	}()
	return ch
}

// Stop cancels a running re-poll.
func (s *Service) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}

// writeFile replaces dir/name atomically, so a reader never sees half an id.
func (s *Service) writeFile(dir, name, val string, mode os.FileMode) error {
	d := filepath.Join(s.RunDir, dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("create env file dir: %w", err)
	}
	f, err := os.CreateTemp(d, name+".tmp*")
	if err != nil {
		return fmt.Errorf("create env file: %w", err)
	}
	_, werr := f.WriteString(val)
	cerr := f.Close()
	if err := firstErr(werr, cerr, os.Chmod(f.Name(), mode), os.Rename(f.Name(), filepath.Join(d, name))); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write env file %s: %w", name, err)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
