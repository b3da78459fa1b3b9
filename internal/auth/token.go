// Package auth decides who may call envd and as whom: the access token set by
// /init (§6.1), the Basic-auth user of RPCs (§6.2) and, for /files, signed URLs
// (§6.4). It provides one HTTP middleware per concern; handlers read the
// resulting user through UserFrom.
package auth

import (
	"crypto/subtle"
	"sync"
)

// Token is the access token. While unset every endpoint is open.
type Token struct {
	mu    sync.RWMutex
	value string
	set   bool
}

// Set stores a new token.
func (t *Token) Set(v string) {
	t.mu.Lock()
	t.value, t.set = v, true
	t.mu.Unlock()
}

// Clear unsets the token, opening every endpoint again.
func (t *Token) Clear() {
	t.mu.Lock()
	t.value, t.set = "", false
	t.mu.Unlock()
}

// Get returns the token and whether one is set.
func (t *Token) Get() (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.value, t.set
}

// Equal reports, in constant time, whether a token is set and equals v.
func (t *Token) Equal(v string) bool {
	want, ok := t.Get()
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(v)) == 1
}
