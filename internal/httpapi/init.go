package httpapi

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/volumes"
)

// VolumeMount is one entry of /init volumeMounts (snake_case on the wire).
type VolumeMount struct {
	NFSTarget string `json:"nfs_target"`
	Path      string `json:"path"`
}

// InitRequest is the /init body (§7.4). Every field is optional.
type InitRequest struct {
	AccessToken    *secureToken       `json:"accessToken"`
	EnvVars        *map[string]string `json:"envVars"`
	DefaultUser    string             `json:"defaultUser"`
	DefaultWorkdir string             `json:"defaultWorkdir"`
	Timestamp      *Timestamp         `json:"timestamp"`
	HyperloopIP    string             `json:"hyperloopIP"`
	VolumeMounts   []VolumeMount      `json:"volumeMounts"`
	LifecycleID    string             `json:"lifecycleID"`
	CABundle       string             `json:"caBundle"`
}

// secureToken rejects what the existing envds reject: an empty token and
// one written with escape sequences. A JSON null leaves the field absent.
type secureToken string

func (t *secureToken) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return errors.New("access token must be a string")
	}
	inner := b[1 : len(b)-1]
	if len(inner) == 0 {
		return errors.New("access token is empty")
	}
	if bytes.IndexByte(inner, '\\') >= 0 {
		return errors.New("access token contains escape sequences")
	}
	*t = secureToken(inner)
	return nil
}

// Init serves POST /init. The hooks are filled by whoever owns the VM side
// (MMDS, port forwarding, clock); a nil hook does nothing.
type Init struct {
	Env     *execenv.Env
	Token   *auth.Token
	Version string
	Log     *slog.Logger
	Now     func() time.Time

	// AccessTokenHash returns MMDS accessTokenHash (hex SHA-512). nil, an
	// error or "" all mean "MMDS has no hash", as with --isnotfc.
	AccessTokenHash func(ctx context.Context) (string, error)
	// SetClock is called when the request's timestamp shows the guest clock
	// off by more than ClockNeedsSet allows.
	SetClock func(time.Time) error
	// MountVolumes handles volumeMounts (volumes.Mounter.MountAll); an
	// error fails /init with 400. nil: volumeMounts is ignored with a warning.
	MountVolumes func(ctx context.Context, vols []volumes.Volume, lifecycleID string) error
	// InstallCABundle handles caBundle (cabundle.Installer.Install); an
	// error fails /init with 400. nil: caBundle is ignored with a warning.
	InstallCABundle func(pem string) error
	// AfterInit runs after every authorised /init, stale or not: restart port
	// forwarding stopped by /snapshot/prepare, re-poll MMDS.
	AfterInit func(ctx context.Context)
	// OnAuthorized runs once the token is validated, stale request or not;
	// the func it returns runs as the handler ends, before the response is
	// flushed (§18.2: audit header, then the deferred thaw).
	OnAuthorized func(r *http.Request, hdr http.Header) func()
	// HostsPath is the hosts file hyperloopIP rewrites; "" skips the rewrite
	// (outside a VM envd must not edit the host's /etc/hosts).
	HostsPath string

	// lock serializes /init; a channel so waiting honours cancellation.
	lock   chan struct{}
	lastTS int64
	seenTS bool
}

// NewInit returns an Init with its lock ready; set the hooks before serving.
func NewInit(env *execenv.Env, token *auth.Token, version string, log *slog.Logger) *Init {
	return &Init{Env: env, Token: token, Version: version, Log: log, Now: time.Now, lock: make(chan struct{}, 1)}
}

func (h *Init) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	handler{h.serve, h.Log}.ServeHTTP(w, r)
}

// maxInitBody bounds the body; a CA bundle is the largest legitimate part.
const maxInitBody = 8 << 20

func (h *Init) serve(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("X-Envd-Version", h.Version)
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInitBody))
	if err != nil {
		return plainError(http.StatusBadRequest, fmt.Sprintf("read body: %v", err))
	}
	var req InitRequest
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &req); err != nil {
			return plainError(http.StatusBadRequest, fmt.Sprintf("decode body: %v", err))
		}
	}

	select {
	case h.lock <- struct{}{}:
	case <-r.Context().Done():
		return plainError(http.StatusServiceUnavailable, "init cancelled while waiting for another init")
	}
	defer func() { <-h.lock }()

	if err := h.checkToken(r.Context(), req.AccessToken); err != nil {
		return err
	}
	if h.OnAuthorized != nil {
		defer h.OnAuthorized(r, w.Header())()
	}
	if h.fresh(req.Timestamp) {
		if err := h.apply(r.Context(), &req); err != nil {
			return err
		}
	} else {
		h.Log.Debug("stale /init skipped", "timestamp", req.Timestamp)
	}
	if h.AfterInit != nil {
		h.AfterInit(context.WithoutCancel(r.Context()))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkToken is step 4 of §7.4, run for every request, stale or not.
func (h *Init) checkToken(ctx context.Context, reqTok *secureToken) error {
	_, set := h.Token.Get()
	if set && reqTok != nil && h.Token.Equal(string(*reqTok)) {
		return nil
	}
	var hash string
	if h.AccessTokenHash != nil {
		if v, err := h.AccessTokenHash(ctx); err == nil {
			hash = strings.ToLower(strings.TrimSpace(v))
		} else {
			h.Log.Debug("MMDS access token hash unavailable", "err", err)
		}
	}
	if hash != "" {
		var tok string
		if reqTok != nil {
			tok = string(*reqTok)
		}
		// An absent token matches only the hash of "": an authorised reset.
		sum := sha512.Sum512([]byte(tok))
		if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(hash)) == 1 {
			return nil
		}
	}
	if !set && hash == "" {
		return nil // first-time setup
	}
	if reqTok == nil {
		return plainError(http.StatusUnauthorized, "access token reset not authorized")
	}
	return plainError(http.StatusUnauthorized, "access token validation failed")
}

// fresh records the timestamp when it is not older than every one seen so
// far; an equal one re-applies. Called under the lock.
func (h *Init) fresh(ts *Timestamp) bool {
	if ts == nil {
		return true
	}
	n := ts.UnixNano()
	if h.seenTS && n < h.lastTS {
		return false
	}
	h.lastTS, h.seenTS = n, true
	return true
}

// apply is step 6, in EG's order. Fields applied before a failing step stay.
func (h *Init) apply(ctx context.Context, req *InitRequest) error {
	if req.Timestamp != nil && h.SetClock != nil && ClockNeedsSet(h.Now(), req.Timestamp.Time) {
		if err := h.SetClock(req.Timestamp.Time); err != nil {
			h.Log.Warn("set clock from /init timestamp", "err", err)
		}
	}
	if req.EnvVars != nil {
		h.Env.ReplaceVars(*req.EnvVars)
	}
	if req.AccessToken != nil {
		h.Token.Set(string(*req.AccessToken))
	} else {
		h.Token.Clear()
	}
	if req.HyperloopIP != "" {
		h.setHyperloop(req.HyperloopIP)
	}
	h.Env.SetDefaultUser(req.DefaultUser)
	h.Env.SetDefaultWorkdir(req.DefaultWorkdir)
	if req.CABundle != "" {
		if h.InstallCABundle == nil {
			h.Log.Warn("caBundle ignored: no trust store to install it into (--isnotfc)")
		} else if err := h.InstallCABundle(req.CABundle); err != nil {
			return plainError(http.StatusBadRequest, fmt.Sprintf("failed to install CA bundle: %v", err))
		}
	}
	if len(req.VolumeMounts) > 0 {
		if h.MountVolumes == nil {
			h.Log.Warn("volumeMounts ignored: volume mounting is off")
		} else if err := h.MountVolumes(ctx, toVolumes(req.VolumeMounts), req.LifecycleID); err != nil {
			return plainError(http.StatusBadRequest, fmt.Sprintf("failed to setup NFS volumes: %v", err))
		}
	}
	return nil
}

func toVolumes(ms []VolumeMount) []volumes.Volume {
	vols := make([]volumes.Volume, len(ms))
	for i, m := range ms {
		vols[i] = volumes.Volume{Target: m.NFSTarget, Path: m.Path}
	}
	return vols
}

// ClockNeedsSet reports whether the guest clock should be set to host: more
// than 50 ms behind or more than 5 s ahead. The asymmetry keeps a guest from
// jumping back over small differences that are request latency, not drift.
func ClockNeedsSet(guest, host time.Time) bool {
	d := guest.Sub(host)
	return d < -50*time.Millisecond || d > 5*time.Second
}

// hyperloopNames are the host names and variables of the events endpoint:
// Wrenn's and E2B's, both written so that code from either platform finds it.
var hyperloopNames = []struct{ host, env string }{
	{"events.wrenn.local", "WRENN_EVENTS_ADDRESS"},
	{"events.e2b.local", "E2B_EVENTS_ADDRESS"},
}

// setHyperloop points the events host names at ip in the hosts file and
// publishes the address to processes. It runs inline: the file is tiny, and
// doing it before 204 means the next process already sees it. An unchanged
// file is not rewritten, so a repeated /init writes nothing.
func (h *Init) setHyperloop(ip string) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		h.Log.Warn("ignoring invalid hyperloopIP", "ip", ip, "err", err)
		return
	}
	if h.HostsPath == "" {
		return
	}
	old, err := os.ReadFile(h.HostsPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.Log.Warn("read hosts file", "err", err)
		return
	}
	hosts := old
	for _, n := range hyperloopNames {
		hosts = RewriteHosts(hosts, n.host, addr)
	}
	if !bytes.Equal(hosts, old) {
		if err := os.WriteFile(h.HostsPath, hosts, 0o644); err != nil {
			h.Log.Warn("write hosts file", "err", err)
			return
		}
	}
	url := "http://" + addr.String()
	if addr.Is6() {
		url = "http://[" + addr.String() + "]"
	}
	for _, n := range hyperloopNames {
		h.Env.SetInternal(n.env, url)
	}
}

// RewriteHosts drops every line mapping host and appends one mapping it to addr.
func RewriteHosts(hosts []byte, host string, addr netip.Addr) []byte {
	var out bytes.Buffer
	for line := range strings.Lines(string(hosts)) {
		fields := strings.Fields(strings.SplitN(line, "#", 2)[0])
		mapsHost := false
		for _, f := range fields[min(1, len(fields)):] {
			if strings.EqualFold(f, host) {
				mapsHost = true
			}
		}
		if mapsHost {
			continue
		}
		out.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	fmt.Fprintf(&out, "%s\t%s\n", addr, host)
	return out.Bytes()
}

// Timestamp is /init's timestamp: RFC 3339 as E2B's orchestrator sends it,
// or a decimal string of Unix seconds ("1700000000.5") as Wrenn's envd-rs
// reads it.
type Timestamp struct{ time.Time }

var errTimestamp = errors.New(`timestamp must be a string in RFC 3339 ("2006-01-02T15:04:05.999999999Z07:00") or decimal Unix seconds ("1700000000.5")`)

func (t *Timestamp) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w, got %.40s", errTimestamp, b)
	}
	if ts, ok := parseUnixSeconds(s); ok {
		t.Time = ts
		return nil
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("%w, got %q", errTimestamp, s)
	}
	t.Time = ts
	return nil
}

// parseUnixSeconds reads digits with an optional fraction exactly, without
// a float's rounding, so equal timestamps stay equal for the ordering guard.
func parseUnixSeconds(s string) (time.Time, bool) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole+frac == "" || !allDigits(whole) || !allDigits(frac) {
		return time.Time{}, false
	}
	var sec int64
	if whole != "" {
		v, err := strconv.ParseInt(whole, 10, 64)
		// UnixNano, which orders /init calls, ends in 2262.
		if err != nil || v > math.MaxInt64/int64(time.Second)-1 {
			return time.Time{}, false
		}
		sec = v
	}
	frac = (frac + "000000000")[:9]
	nsec, _ := strconv.ParseInt(frac, 10, 64)
	return time.Unix(sec, nsec).UTC(), true
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
