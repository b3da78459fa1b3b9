package envdtest

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestHealth(t *testing.T) {
	s := Start(t)
	resp, err := s.Client.Get(s.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Version string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || body.Version != "0.7.0" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, body %+v, headers %v", resp.StatusCode, body, resp.Header)
	}
}

func TestUnknownBasicUserFailsEvenHealth(t *testing.T) {
	s := Start(t)
	req, _ := http.NewRequest("GET", s.URL+"/health", nil)
	req.SetBasicAuth("no-such-user-envd", "")
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	s := Start(t)
	for _, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/nope", 404}, {"POST", "/health", 405}, {"GET", "/freeze", 405}} {
		req, _ := http.NewRequest(c.method, s.URL+c.path, nil)
		resp, err := s.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
}
