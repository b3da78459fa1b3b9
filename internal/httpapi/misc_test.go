package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/envd-dev/envd/internal/httpapi"
	"github.com/envd-dev/envd/internal/sysstat"
)

func TestMetrics(t *testing.T) {
	c := start(t)
	resp, body := c.do("GET", "/metrics", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	var raw map[string]json.Number
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ts", "cpu_count", "cpu_used_pct", "mem_total_mib", "mem_used_mib", "mem_total", "mem_used", "mem_cache", "disk_used", "disk_total"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("field %s missing from %s", k, body)
		}
	}
	if len(raw) != 10 {
		t.Errorf("%d fields: %s", len(raw), body)
	}
	var m sysstat.Metrics
	json.Unmarshal(body, &m)
	if m.CPUCount == 0 || m.MemTotal == 0 || m.DiskTotal == 0 || m.MemTotalMiB != m.MemTotal>>20 {
		t.Errorf("implausible: %+v", m)
	}
}

func TestMetricsFailureIsEmpty500(t *testing.T) {
	h := &httpapi.Metrics{Sampler: sysstat.NewSampler(t.TempDir(), "/", nil)}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 500 || rec.Body.Len() != 0 {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
}

func TestEnvs(t *testing.T) {
	c := start(t)
	c.init(`{"envVars":{"FOO":"bar","WRENN_SANDBOX":"overwrite attempt"}}`)
	resp, body := c.do("GET", "/envs", nil)
	var vars map[string]string
	if err := json.Unmarshal(body, &vars); err != nil || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %s %v", resp.StatusCode, body, err)
	}
	if _, has := vars["WRENN_SANDBOX"]; vars["FOO"] != "bar" || !has || vars["WRENN_SANDBOX"] == "overwrite attempt" {
		t.Fatalf("%v", vars)
	}
}

func TestSnapshotPrepareRunsQuiesceHooks(t *testing.T) {
	var order []string
	h := &httpapi.SnapshotPrepare{Quiesce: []func(context.Context){
		func(context.Context) { order = append(order, "ports") },
		func(context.Context) { order = append(order, "gc") },
	}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/snapshot/prepare", nil))
	if rec.Code != 204 || rec.Header().Get("Cache-Control") != "no-store" || len(order) != 2 || order[0] != "ports" {
		t.Fatalf("%d %v", rec.Code, order)
	}
}
