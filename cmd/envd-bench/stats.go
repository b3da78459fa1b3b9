package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// durations summarises repeated timings of one operation.
type durations []time.Duration

func (d durations) quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	// Nearest-rank: with few samples p99 is the maximum, which is what a
	// reader of "p99" over 20 samples should expect.
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (d durations) median() time.Duration { return d.quantile(0.5) }
func (d durations) p99() time.Duration    { return d.quantile(0.99) }

// rates summarises repeated throughput runs (bytes per second).
type rates []float64

func (r rates) median() float64 {
	if len(r) == 0 {
		return 0
	}
	s := slices.Clone(r)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// direction says whether a smaller or a larger ratio is better.
type direction int

const (
	lowerIsBetter direction = iota
	higherIsBetter
)

// target is the goal for one scenario.
type target struct {
	dir   direction
	ratio float64 // goal for envd/limit; 0 when the goal is absolute
	text  string  // as printed
}

func atMost(x float64) target  { return target{lowerIsBetter, x, fmt.Sprintf("≤ %g×", x)} }
func atLeast(x float64) target { return target{higherIsBetter, x, fmt.Sprintf("≥ %g×", x)} }

// row is one line of the result table.
type row struct {
	name   string
	envd   string
	limit  string
	ratio  float64 // NaN when not applicable
	target target
	met    string // "yes", "NO", "n/a"; "ERROR" when err != nil
	err    error
	note   string
}

func errRow(name string, t target, err error) row {
	return row{name: name, ratio: math.NaN(), target: t, err: err}
}

// judge fills ratio and met from the two figures, where both are "cost"
// (lowerIsBetter) or both are "speed" (higherIsBetter).
func (r *row) judge(envd, limit float64) {
	r.ratio = math.NaN()
	if limit > 0 {
		r.ratio = envd / limit
	}
	switch {
	case r.err != nil:
		r.met = "ERROR"
	case math.IsNaN(r.ratio) || r.target.ratio == 0:
		r.met = "n/a"
	case r.target.dir == lowerIsBetter && r.ratio <= r.target.ratio,
		r.target.dir == higherIsBetter && r.ratio >= r.target.ratio:
		r.met = "yes"
	default:
		r.met = "NO"
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtLatency(d durations) string {
	if len(d) == 1 {
		return fmtDur(d[0])
	}
	return fmtDur(d.median()) + " (p99 " + fmtDur(d.p99()) + ")"
}

func fmtRate(bps float64) string {
	return fmt.Sprintf("%.0f MiB/s", bps/(1<<20))
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// printTable writes rows as a Markdown table, so a run can be pasted into the
// README unchanged, followed by the notes and errors the cells had no room for.
func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| scenario | envd | limit (this machine) | ratio | target | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	var notes []string
	for i, r := range rows {
		ratio := "—"
		if !math.IsNaN(r.ratio) && r.err == nil {
			ratio = fmt.Sprintf("%.2f×", r.ratio)
		}
		envd := r.envd
		met := r.met
		if r.err != nil {
			envd, met = "error ["+fmt.Sprint(i+1)+"]", "ERROR"
			notes = append(notes, fmt.Sprintf("[%d] %s: %v", i+1, r.name, oneLine(r.err.Error())))
		} else if r.note != "" {
			met += " [" + fmt.Sprint(i+1) + "]"
			notes = append(notes, fmt.Sprintf("[%d] %s: %s", i+1, r.name, r.note))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.name, orDash(envd), orDash(r.limit), ratio, orDash(r.target.text), met)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}
