package main

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestVerifierCatchesWrongAndMissingBytes(t *testing.T) {
	pattern := []byte("abcdefgh")
	good := bytes.Repeat(pattern, 5)[:37]

	v := newVerifier(pattern)
	// Odd write sizes cross the pattern boundary.
	for off := 0; off < len(good); off += 3 {
		v.Write(good[off:min(off+3, len(good))])
	}
	if err := v.check(37); err != nil {
		t.Fatalf("correct content: %v", err)
	}
	if err := v.check(40); err == nil || !strings.Contains(err.Error(), "got 37 bytes, want 40") {
		t.Fatalf("short content: got %v", err)
	}

	bad := bytes.Clone(good)
	bad[21] = 'X'
	v = newVerifier(pattern)
	io.Copy(v, bytes.NewReader(bad))
	if err := v.check(37); err == nil || !strings.Contains(err.Error(), "mismatch at byte 21") {
		t.Fatalf("corrupt byte 21: got %v", err)
	}
}

func TestRepeatReaderMatchesVerifier(t *testing.T) {
	pattern := []byte("0123456789")
	v := newVerifier(pattern)
	n, err := io.CopyBuffer(v, &repeatReader{pattern: pattern, n: 1003}, make([]byte, 7))
	if err != nil || n != 1003 {
		t.Fatalf("copied %d, %v", n, err)
	}
	if err := v.check(1003); err != nil {
		t.Fatal(err)
	}
}

func TestQuantiles(t *testing.T) {
	var d durations
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if got := d.median(); got != 50*time.Millisecond {
		t.Errorf("median = %v, want 50ms", got)
	}
	if got := d.p99(); got != 99*time.Millisecond {
		t.Errorf("p99 = %v, want 99ms", got)
	}
	if got := (durations{7}).p99(); got != 7 {
		t.Errorf("p99 of one sample = %v", got)
	}
	if got := (rates{3, 1, 2}).median(); got != 2 {
		t.Errorf("rates median = %v", got)
	}
}

func TestJudge(t *testing.T) {
	cases := []struct {
		t           target
		envd, limit float64
		want        string
	}{
		{atMost(2), 3, 2, "yes"},
		{atMost(2), 5, 2, "NO"},
		{atLeast(0.6), 7, 10, "yes"},
		{atLeast(0.6), 5, 10, "NO"},
		{atLeast(0.6), 5, 0, "n/a"},
	}
	for _, c := range cases {
		r := row{target: c.t}
		r.judge(c.envd, c.limit)
		if r.met != c.want {
			t.Errorf("%s with %v/%v: met %q, want %q", c.t.text, c.envd, c.limit, r.met, c.want)
		}
	}
	r := row{target: atMost(2), err: errors.New("boom")}
	r.judge(1, 1)
	if r.met != "ERROR" {
		t.Errorf("row with error judged %q", r.met)
	}
}

func TestPrintTableShowsErrorsAndNotes(t *testing.T) {
	ok := row{name: "fast", envd: "1 ms", limit: "1 ms", target: atMost(2), note: "noisy"}
	ok.judge(1, 1)
	bad := errRow("broken", atLeast(1), errors.New("content mismatch at byte 5"))
	var sb strings.Builder
	printTable(&sb, []row{ok, bad})
	out := sb.String()
	for _, want := range []string{
		"| fast | 1 ms | 1 ms | 1.00× | ≤ 2× | yes [1] |",
		"| broken | error [2] | — | — | ≥ 1× | ERROR |",
		"[1] fast: noisy",
		"[2] broken: content mismatch at byte 5",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	rss, err := procStatus(pid, "VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("VmRSS = %d, %v", rss, err)
	}
	if _, err := procStatus(pid, "NoSuchField"); err == nil {
		t.Error("missing field: no error")
	}
	// Spin until the tick counter moves; a parser reading the wrong field
	// (or nothing) never sees it move.
	before, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	after := before
	x := 0.0
	for start := time.Now(); after == before && time.Since(start) < 30*time.Second; {
		for range 1_000_000 {
			x = math.Sqrt(x + 2)
		}
		if after, err = procCPU(pid); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("CPU time did not grow in 30 s of spinning: %v → %v (x=%v)", before, after, x)
	}
	if !alive(pid) || alive(1<<30) {
		t.Error("alive() wrong for self or for an impossible pid")
	}
}

func TestBudgetCancelsWithoutDeadline(t *testing.T) {
	ctx, cancel := budget(time.Millisecond)
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("budget context has a deadline; connect-go would send it as Connect-Timeout-Ms")
	}
	<-ctx.Done() // the test's own timeout catches a budget that never ends
}
