package main

import (
	"bytes"
	"fmt"
	"time"
)

// verifier is an io.Writer that checks every byte it is given against the
// expected content (pattern repeated from offset 0) and counts them. Comparing
// with the known content is exact, like a checksum, but costs a memcmp instead
// of a hash, so it does not cap the throughput being measured.
type verifier struct {
	pattern  []byte
	n        int64
	mismatch int64 // offset of the first wrong byte, -1 if none
}

func newVerifier(pattern []byte) *verifier { return &verifier{pattern: pattern, mismatch: -1} }

func (v *verifier) Write(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		off := int(v.n % int64(len(v.pattern)))
		k := min(len(p), len(v.pattern)-off)
		if v.mismatch < 0 && !bytes.Equal(p[:k], v.pattern[off:off+k]) {
			for i := range k {
				if p[i] != v.pattern[off+i] {
					v.mismatch = v.n + int64(i)
					break
				}
			}
		}
		v.n += int64(k)
		p = p[k:]
	}
	return written, nil
}

// check reports whether exactly want bytes of the expected content arrived.
func (v *verifier) check(want int64) error {
	if v.mismatch >= 0 {
		return fmt.Errorf("content mismatch at byte %d of %d", v.mismatch, v.n)
	}
	if v.n != want {
		return fmt.Errorf("got %d bytes, want %d", v.n, want)
	}
	return nil
}

// zeroPattern is the expected content of /dev/zero.
func zeroPattern() []byte { return make([]byte, 1<<16) }

// timedCheck runs move with a fresh verifier of pattern and returns how long
// it took; an error when move failed or did not deliver exactly n expected bytes.
func timedCheck(pattern []byte, n int64, move func(*verifier) error) (time.Duration, error) {
	v := newVerifier(pattern)
	t0 := time.Now()
	err := move(v)
	d := time.Since(t0)
	if err == nil {
		err = v.check(n)
	}
	return d, err
}
