// Package mmds reads the sandbox's identity from Firecracker's metadata
// service, version 2 (§11.1): PUT a session token, then GET the metadata with
// it. Service polls it at boot and after /init, then publishes the ids as
// default env vars and as files under /run (§11.1–11.2). The base URL and
// the http.Client are fields, so tests run a local server. Used by daemon.
package mmds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// tokenTTL is the session token lifetime requested, in seconds; a token is
// used for one GET right after, so any short value works.
const tokenTTL = 60

// maxBody bounds what envd reads from MMDS; the metadata is a few hundred bytes.
const maxBody = 1 << 20

// Metadata holds the keys envd reads (§11.1 table).
type Metadata struct {
	InstanceID      string `json:"instanceID"`      // sandbox id
	EnvID           string `json:"envID"`           // template id
	AccessTokenHash string `json:"accessTokenHash"` // hex SHA-512 of the access token, or of ""
	Address         string `json:"address"`         // log collector URL
}

// Client talks MMDS v2.
type Client struct {
	BaseURL string       // config.Config.MMDSAddress: http://169.254.169.254 in a VM
	HTTP    *http.Client // with its own timeout
}

// ErrStatus is wrapped by errors for a non-2xx answer.
var ErrStatus = errors.New("unexpected MMDS status")

// Get fetches a fresh token and then the metadata.
func (c *Client) Get(ctx context.Context) (Metadata, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return Metadata{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.BaseURL, "/")+"/", nil)
	if err != nil {
		return Metadata{}, fmt.Errorf("build metadata request: %w", err)
	}
	req.Header.Set("X-metadata-token", tok)
	req.Header.Set("Accept", "application/json")
	body, err := c.do(req)
	if err != nil {
		return Metadata{}, fmt.Errorf("get metadata: %w", err)
	}
	var md Metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return Metadata{}, fmt.Errorf("decode metadata: %w", err)
	}
	return md, nil
}

// AccessTokenHash is /init's hook (§7.4 step 4): a fresh fetch each time, so
// a hash written after a restore is seen.
func (c *Client) AccessTokenHash(ctx context.Context) (string, error) {
	md, err := c.Get(ctx)
	if err != nil {
		return "", err
	}
	return md.AccessTokenHash, nil
}

func (c *Client) token(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(c.BaseURL, "/")+"/latest/api/token", nil)
	if err != nil {
		return "", fmt.Errorf("build token request: %w", err)
	}
	req.Header.Set("X-metadata-token-ttl-seconds", strconv.Itoa(tokenTTL))
	body, err := c.do(req)
	if err != nil {
		return "", fmt.Errorf("get MMDS token: %w", err)
	}
	tok := strings.TrimSpace(string(body))
	if tok == "" {
		return "", errors.New("get MMDS token: empty token")
	}
	return tok, nil
}

func (c *Client) do(req *http.Request) ([]byte, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%w %d: %s", ErrStatus, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, nil
}
