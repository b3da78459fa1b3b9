package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/execenv"
)

const unauthorizedMessage = "unauthorized access, please provide a valid access token or method signing if supported"

// RequireToken rejects requests lacking the access token once one is set,
// except those public says are exempt (§6.1). The route table decides who is
// public, where each route is declared; public sees the request before any
// routing, so it matches METHOD and path exactly, as the existing envds do.
func RequireToken(tok *Token, public func(*http.Request) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, set := tok.Get(); set && !public(r) && !tok.Equal(r.Header.Get("X-Access-Token")) {
			WriteJSONError(w, http.StatusUnauthorized, unauthorizedMessage)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteJSONError writes the REST error shape of §5.
func WriteJSONError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, message})
}

type userKey struct{}

// BasicUser resolves the HTTP Basic-auth user of every request. A header that
// names an unknown user (or the empty name) fails the request with
// Unauthenticated, whatever the path, as the existing envds' authn middleware
// does; the error is written in Connect's format, which for non-RPC requests
// is the unary JSON shape of §5. No header leaves the choice to UserFrom.
func BasicUser(env *execenv.Env, next http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _, ok := r.BasicAuth()
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		u, err := env.LookupUser(name)
		if err != nil {
			_ = errw.Write(w, r, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("invalid username: '%s'", name)))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
	})
}

// UserFrom returns the Basic-auth user of the request, or else the current
// default user. A default user that does not resolve is Unauthenticated.
func UserFrom(ctx context.Context, env *execenv.Env) (*execenv.User, error) {
	if u, ok := ctx.Value(userKey{}).(*execenv.User); ok {
		return u, nil
	}
	name := env.Snapshot().User
	u, err := env.LookupUser(name)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("invalid default user: '%s'", name))
	}
	return u, nil
}
