package daemon

import (
	"net"
	"net/http"
	"sync"
)

// freshConns tracks connections that have not yet sent a request. net/http's
// Shutdown treats such a connection as busy for its first 5 seconds, so a
// client that merely opened one (HTTP clients pre-dial) held every shutdown
// of envd for 5 s. At shutdown the listener is already closed and these
// connections carry no request, so closing them loses nothing.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == http.StateNew {
		if f.conns == nil {
			f.conns = map[net.Conn]struct{}{}
		}
		f.conns[c] = struct{}{}
		return
	}
	delete(f.conns, c)
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}
