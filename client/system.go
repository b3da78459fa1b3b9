package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Health returns the version envd reports on GET /health.
func (c *Client) Health(ctx context.Context) (string, error) {
	var h struct {
		Version string `json:"version"`
	}
	if err := c.getJSON(ctx, "/health", &h); err != nil {
		return "", err
	}
	return h.Version, nil
}

// WaitHealthy polls GET /health every interval (100 ms if zero, as the Wrenn
// host agent does) until envd answers 200, and returns its version: what a
// host agent does after booting or restoring a VM. It gives up when ctx ends,
// returning the last failure.
func (c *Client) WaitHealthy(ctx context.Context, interval time.Duration) (string, error) {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v, err := c.Health(ctx)
		if err == nil {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return "", errors.Join(transportError("GET /health", ctx.Err()), err)
		case <-t.C:
		}
	}
}

// InitOptions is the body of POST /init; zero fields are left out.
type InitOptions struct {
	AccessToken    string            `json:"accessToken,omitempty"`
	EnvVars        map[string]string `json:"envVars,omitempty"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
	// Timestamp orders concurrent inits: envd ignores one older than the
	// newest it applied. Zero: not sent.
	Timestamp time.Time `json:"-"`
}

// Init sends POST /init, as a host agent does after boot and every resume.
// Setting AccessToken does not change this Client's token: use a new Client
// WithToken for the calls that follow.
func (c *Client) Init(ctx context.Context, o InitOptions) error {
	type body struct {
		InitOptions
		Timestamp string `json:"timestamp,omitempty"`
	}
	b := body{InitOptions: o}
	if !o.Timestamp.IsZero() {
		b.Timestamp = o.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return c.post(ctx, "/init", bytes.NewReader(data))
}

// SnapshotPrepare tells envd a snapshot is about to be taken (it stops port
// forwarding until the next Init).
func (c *Client) SnapshotPrepare(ctx context.Context) error {
	return c.post(ctx, "/snapshot/prepare", nil)
}

// Envs returns envd's default environment (what every process gets).
func (c *Client) Envs(ctx context.Context) (map[string]string, error) {
	m := map[string]string{}
	if err := c.getJSON(ctx, "/envs", &m); err != nil {
		return nil, err
	}
	return m, nil
}

// Metrics is GET /metrics.
type Metrics struct {
	Timestamp   int64   `json:"ts"`
	CPUCount    uint32  `json:"cpu_count"`
	CPUUsedPct  float32 `json:"cpu_used_pct"`
	MemTotalMiB uint64  `json:"mem_total_mib"`
	MemUsedMiB  uint64  `json:"mem_used_mib"`
	MemTotal    uint64  `json:"mem_total"`
	MemUsed     uint64  `json:"mem_used"`
	MemCache    uint64  `json:"mem_cache"`
	DiskUsed    uint64  `json:"disk_used"`
	DiskTotal   uint64  `json:"disk_total"`
}

// Metrics returns the VM's CPU, memory and disk figures.
func (c *Client) Metrics(ctx context.Context) (*Metrics, error) {
	var m Metrics
	if err := c.getJSON(ctx, "/metrics", &m); err != nil {
		return nil, err
	}
	return &m, nil
}
