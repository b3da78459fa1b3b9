package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/execenv"
)

// Exempt lists the METHOD+PATH pairs that never need X-Access-Token (§6.1):
// /files checks its own header-or-signature, /init authenticates itself.
var exempt = map[string]bool{
	"GET/health": true,
	"GET/files":  true,
	"POST/files": true,
	"POST/init":  true,
}

const unauthorizedMessage = "unauthorized access, please provide a valid access token or method signing if supported"

// RequireToken rejects non-exempt requests lacking the access token once one is set.
func RequireToken(tok *Token, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, set := tok.Get(); set && !exempt[r.Method+r.URL.Path] && !tok.Equal(r.Header.Get("X-Access-Token")) {
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
// names an unknown user fails the request with Unauthenticated, whatever the
// path, as the existing envds do; no header leaves the choice to UserFrom.
func BasicUser(next http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := basicName(r.Header.Get("Authorization"))
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		u, err := execenv.LookupUser(name)
		if err != nil {
			cerr := connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("invalid username: '%s'", name))
			if errw.IsSupported(r) {
				_ = errw.Write(w, r, cerr)
			} else {
				WriteJSONError(w, http.StatusUnauthorized, cerr.Message())
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, u)))
	})
}

func basicName(header string) (string, bool) {
	const prefix = "Basic "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(header[len(prefix):]))
	if err != nil {
		return "", false
	}
	name, _, _ := strings.Cut(string(raw), ":")
	return name, name != ""
}

// UserFrom returns the Basic-auth user of the request, or else the current
// default user. A default user that does not resolve is Unauthenticated.
func UserFrom(ctx context.Context, env *execenv.Env) (*execenv.User, error) {
	if u, ok := ctx.Value(userKey{}).(*execenv.User); ok {
		return u, nil
	}
	name := env.Snapshot().User
	u, err := execenv.LookupUser(name)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("invalid default user: '%s'", name))
	}
	return u, nil
}
