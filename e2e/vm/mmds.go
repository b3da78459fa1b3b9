package vm

import (
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/envd-dev/envd/internal/mmds/mmdstest"
)

// MMDS is the host side of the guest's metadata service: mmdstest's strict
// MMDS v2 server on a loopback port, which qemu's guestfwd connects the
// guest's 169.254.169.254:80 to.
type MMDS struct {
	*mmdstest.Server
	Port int
	srv  *http.Server
}

// ServeMMDS serves data on a free loopback port until Close.
func ServeMMDS(data map[string]any) (*MMDS, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &MMDS{Server: mmdstest.NewHandler(data), Port: ln.Addr().(*net.TCPAddr).Port}
	m.srv = &http.Server{Handler: m.Server, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return m, nil
}

// Close stops the server.
func (m *MMDS) Close() error { return m.srv.Close() }

// TokenHash is MMDS accessTokenHash for token: hex SHA-512 (§11.1).
func TokenHash(token string) string {
	sum := sha512.Sum512([]byte(token))
	return hex.EncodeToString(sum[:])
}
