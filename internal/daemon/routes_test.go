package daemon

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The token is skipped for exactly the method and path a route was declared
// public with: not for HEAD, a path that routing would clean into it, or a
// route declared without public(…).
func TestRouteTablePublicIsExact(t *testing.T) {
	tab := newRouteTable()
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	tab.Handle("GET /open", public(ok))
	tab.Handle("GET /closed", ok)
	tab.Handle("/subtree/", ok)
	for _, c := range []struct {
		method, target string
		want           bool
	}{
		{"GET", "/open", true},
		{"GET", "/open?x=1", true},
		{"HEAD", "/open", false},
		{"POST", "/open", false},
		{"GET", "//open", false},
		{"GET", "/open/", false},
		{"GET", "/closed", false},
		{"GET", "/subtree/x", false},
	} {
		if got := tab.isPublic(httptest.NewRequest(c.method, c.target, nil)); got != c.want {
			t.Errorf("%s %s public = %v, want %v", c.method, c.target, got, c.want)
		}
	}
}

func TestRouteTableRefusesWidePublicPatterns(t *testing.T) {
	for _, pattern := range []string{"/open", "GET /tree/", "GET /files/{name}", "GET example.com/x"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("public %q was accepted", pattern)
				}
			}()
			newRouteTable().Handle(pattern, public(http.NotFoundHandler()))
		}()
	}
}
