package main

import (
	"bytes"
	"strings"
	"testing"
)

const run = `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"    a_test.go:3: chatter of a passing test\n"}
{"Action":"pass","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"=== RUN   TestSkip/sub\n"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"    a_test.go:7: setting up\n"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"    a_test.go:9: needs the memory controller\n"}
{"Action":"output","Package":"p","Test":"TestSkip/sub","Output":"--- SKIP: TestSkip/sub (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestSkip/sub"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    a_test.go:12: wrong answer\n"}
{"Action":"fail","Package":"p","Test":"TestBad"}
{"Action":"output","Package":"p","Output":"FAIL\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}
{"Action":"fail","Package":"p"}
{"Action":"output","Package":"q","Test":"TestHang","Output":"panic: test timed out\n"}
{"Action":"output","Package":"q","Output":"FAIL\tq\t600s\n"}
{"Action":"fail","Package":"q"}
{"Action":"output","Package":"r","Output":"PASS\n"}
{"Action":"output","Package":"r","Output":"ok  \tr\t0.2s\n"}
not json: a build error
`

func TestHumanShowsFailuresAndResultsOnly(t *testing.T) {
	var out bytes.Buffer
	r := &report{human: &out, pending: map[string][]string{}}
	if err := r.read(strings.NewReader(run)); err != nil {
		t.Fatal(err)
	}
	want := "    a_test.go:12: wrong answer\nFAIL\nFAIL\tp\t0.1s\nFAIL\tq\t600s\npanic: test timed out\nok  \tr\t0.2s\nnot json: a build error\n"
	if out.String() != want {
		t.Errorf("human output:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestSkippedListsReasons(t *testing.T) {
	r := &report{pending: map[string][]string{}}
	if err := r.read(strings.NewReader(run)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printSkips(&out, r.skips)
	if want := "skipped tests: 1\np TestSkip/sub: a_test.go:9: needs the memory controller\n"; out.String() != want {
		t.Errorf("skip list:\n%s\nwant:\n%s", out.String(), want)
	}
}
