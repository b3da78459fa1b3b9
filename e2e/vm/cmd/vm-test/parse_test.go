package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSuiteCounts(t *testing.T) {
	// The runner's own total wins over node's per-phase summaries.
	out := "ℹ tests 61\nℹ pass 60\nℹ fail 1\n--- last: 1 file(s)\nℹ tests 10\nℹ pass 10\nℹ fail 0\n" +
		"e2e/sdk-js: 71 tests, 70 passed, 1 failed, 0 cancelled, 0 skipped\n"
	got := suiteCounts(out)
	if got["tests"] != 71 || got["pass"] != 70 || got["fail"] != 1 || got["skipped"] != 0 {
		t.Errorf("with the total line: %v", got)
	}
	// Without it, the phases add up.
	got = suiteCounts("ℹ tests 61\nℹ pass 60\nℹ fail 1\nℹ skipped 2\nℹ tests 10\nℹ pass 10\nℹ fail 0\n")
	if got["tests"] != 71 || got["pass"] != 70 || got["fail"] != 1 || got["skipped"] != 2 {
		t.Errorf("node summaries only: %v", got)
	}
	if got := suiteCounts("npm ERR! something\n"); got["pass"] != 0 || got["tests"] != 0 {
		t.Errorf("no summary: %v", got)
	}
}

func TestConsoleLog(t *testing.T) {
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	writeFile(t, console, "[    3.1] random: crng init done\n"+
		`{"time":"2026-12-02T06:09:29.52399355Z","level":"INFO","msg":"boot step done","step":"mount /proc"}`+"\n"+
		"pre-init: exec /usr/local/bin/envd at uptime 2.88\n"+
		// A kernel line written into the middle of envd's line.
		`[    4.2] x {"time":"2026-12-02T06:09:29.79Z","level":"INFO","msg":"envd listening"}`+"\n"+
		"{not json\n")
	lines := consoleLines(console)
	if len(lines) != 2 || logIndex(lines, "boot step done", "mount /proc") != 0 || logIndex(lines, "envd listening", "") != 1 {
		t.Errorf("parsed %v", lines)
	}
	if logIndex(lines, "boot step done", "mount /sys") != -1 {
		t.Error("found a step that is not there")
	}
}

func TestBenchSummary(t *testing.T) {
	table := "envd-bench: full mode, envd at http://127.0.0.1:49983, 2 CPUs, load 1 1 1, now\n\n" +
		"| scenario | envd | limit (this machine) | ratio | target | met |\n|---|---|---|---|---|---|\n" +
		"| Start /bin/true → end event | 20 ms (p99 30 ms) | 8 ms (p99 9 ms) fork+exec+wait | 2.50× | ≤ 2× | NO |\n" +
		"| stdout stream of `head -c 32.0MiB /dev/zero` | 40 MiB/s | 200 MiB/s Go reading a pipe | 0.20× | ≥ 0.6× | NO |\n" +
		"| daemon CPU per GiB of stdout | 9.00 s | 2.00 s Go reading a pipe | 4.50× | ≤ 2× | NO [3] |\n\n" +
		"[3] daemon CPU per GiB of stdout: for scale: this benchmark's own client (Connect decode + content check) used 7.25 s per GiB\n"
	got, err := benchSummary(table, "tcg")
	if err != nil || !strings.Contains(got, "envd 20 ms (p99 30 ms), 8 ms (p99 9 ms) fork+exec+wait, 2.50×") ||
		!strings.Contains(got, "envd 40 MiB/s, 200 MiB/s Go reading a pipe, 0.20×") || !strings.Contains(got, "2 vCPUs") || !strings.Contains(got, "own client 7.25 s per GiB") {
		t.Errorf("summary %q, %v", got, err)
	}
	// A missing or failed row fails the check.
	noStdout := strings.Split(table, "| stdout")[0]
	if _, err := benchSummary(noStdout, "tcg"); err == nil {
		t.Error("no stdout row: no error")
	}
	failed := strings.Replace(table, "| 20 ms (p99 30 ms) | 8 ms (p99 9 ms) fork+exec+wait | 2.50× | ≤ 2× | NO |", "| error [1] | — | — | ≤ 2× | ERROR |", 1)
	if _, err := benchSummary(failed, "tcg"); err == nil {
		t.Error("Start row in error: no error")
	}
}
