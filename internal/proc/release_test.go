package proc_test

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/envd-dev/envd/internal/proc"
)

// Chunks are shared by all subscribers and their buffers reused once every
// subscriber released them. One subscriber releases at once; the other keeps
// each chunk until it holds the next, so a buffer handed back too early would
// be overwritten by a later read while still unread.
func TestSharedChunksSurviveEarlyRelease(t *testing.T) {
	f := newFixture(t)
	const n = 32 << 20
	p, eager := f.start(t, proc.StartOptions{Config: helper("write", strconv.Itoa(n))})
	late := p.Subscribe(t.Context())

	var wg sync.WaitGroup
	var eagerOut, lateOut *output
	wg.Add(2)
	go func() {
		defer wg.Done()
		eagerOut = collectReleasing(p, eager, func(c proc.Chunk, o *output) {
			o.add(c)
			c.Release()
		})
	}()
	go func() {
		defer wg.Done()
		var held *proc.Chunk
		lateOut = collectReleasing(p, late, func(c proc.Chunk, o *output) {
			if held != nil {
				o.add(*held)
				held.Release()
			}
			held = &c
		})
		if held != nil {
			lateOut.add(*held)
			held.Release()
		}
	}()
	wg.Wait()

	for name, o := range map[string]*output{"eager": eagerOut, "late": lateOut} {
		sum := sha256.Sum256(o.stdout.Bytes())
		if o.stdout.Len() != n || strings.TrimSpace(o.stderr.String()) != fmt.Sprintf("%x", sum) {
			t.Errorf("%s subscriber: %d bytes, sha256 %x, writer's %q", name, o.stdout.Len(), sum, o.stderr.String())
		}
	}
}

func (o *output) add(c proc.Chunk) {
	switch c.Stream {
	case proc.Stdout:
		o.stdout.Write(c.Data)
	case proc.Stderr:
		o.stderr.Write(c.Data)
	case proc.PTY:
		o.pty.Write(c.Data)
	}
}

// collectReleasing is collect with a caller-chosen handling of each chunk.
func collectReleasing(p *proc.Process, sub *proc.Subscription, handle func(proc.Chunk, *output)) *output {
	o := &output{}
	for {
		select {
		case c := <-sub.C:
			handle(c, o)
			continue
		case <-p.Done():
		}
		for {
			select {
			case c := <-sub.C:
				handle(c, o)
				continue
			default:
			}
			break
		}
		o.res = p.Result()
		return o
	}
}
