// Command testreport reads `go test -json` events. With -human it prints
// what plain `go test` would (package results, and the output of failed tests
// only) as the events arrive; with -skipped it prints, at the end of a run,
// every skipped test with the reason it gave, so a CI log shows what did not
// run.
//
//	go test -json ./... | tee run.json | testreport -human
//	testreport -skipped run.json
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type skip struct{ pkg, test, reason string }

// report follows the events of one or more runs.
type report struct {
	human   io.Writer // nil: print nothing while reading
	pending map[string][]string
	skips   []skip
}

func key(pkg, test string) string { return pkg + "\x00" + test }

func (r *report) print(s string) {
	if r.human != nil {
		io.WriteString(r.human, s)
	}
}

func (r *report) event(e event) {
	switch {
	case e.Action == "build-output":
		r.print(e.Output)
	case e.Test == "" && e.Action == "output":
		if e.Output != "PASS\n" { // plain go test prints only the "ok" line then
			r.print(e.Output)
		}
	case e.Test == "" && e.Action == "fail":
		// A crashed or timed-out test binary never reports its running
		// tests as failed: show whatever they printed.
		for k, lines := range r.pending {
			if strings.HasPrefix(k, e.Package+"\x00") {
				r.print(strings.Join(lines, ""))
				delete(r.pending, k)
			}
		}
	case e.Test == "":
	case e.Action == "output":
		k := key(e.Package, e.Test)
		r.pending[k] = append(r.pending[k], e.Output)
	case e.Action == "fail":
		k := key(e.Package, e.Test)
		r.print(strings.Join(r.pending[k], ""))
		delete(r.pending, k)
	case e.Action == "skip":
		k := key(e.Package, e.Test)
		r.skips = append(r.skips, skip{e.Package, e.Test, reason(r.pending[k])})
		delete(r.pending, k)
	case e.Action == "pass":
		delete(r.pending, key(e.Package, e.Test))
	}
}

// reason is the last line a skipped test logged (t.Skip's message), without
// the framing lines go test adds.
func reason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- ") {
			continue
		}
		return l
	}
	return "(no reason given)"
}

func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// go test writes some lines (e.g. a build failure of a package
			// without tests) as plain text even with -json.
			r.print(sc.Text() + "\n")
			continue
		}
		r.event(e)
	}
	return sc.Err()
}

func main() {
	human := flag.Bool("human", false, "read events on stdin and print them as plain go test would")
	skipped := flag.Bool("skipped", false, "print the skipped tests, with their reasons, of the event files given as arguments")
	flag.Parse()
	r := &report{pending: map[string][]string{}}
	var err error
	switch {
	case *human:
		out := bufio.NewWriter(os.Stdout)
		r.human = out
		err = r.read(os.Stdin)
		err = errors.Join(err, out.Flush())
	case *skipped:
		for _, name := range flag.Args() {
			f, ferr := os.Open(name)
			if ferr != nil {
				err = errors.Join(err, ferr)
				continue
			}
			err = errors.Join(err, r.read(f))
			f.Close()
		}
		printSkips(os.Stdout, r.skips)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
}

func printSkips(w io.Writer, skips []skip) {
	sort.Slice(skips, func(i, j int) bool {
		if skips[i].pkg != skips[j].pkg {
			return skips[i].pkg < skips[j].pkg
		}
		return skips[i].test < skips[j].test
	})
	fmt.Fprintf(w, "skipped tests: %d\n", len(skips))
	for _, s := range skips {
		fmt.Fprintf(w, "%s %s: %s\n", s.pkg, s.test, s.reason)
	}
}
