package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// The sizes bench_in_vm gives envd-bench: under TCG a fork+exec costs
// milliseconds and a pipe moves tens of MiB/s, so these fit about two
// minutes there, and each figure is still the median of real samples
// (unlike -short's single tiny ones).
const (
	benchIters     = 40
	benchReps      = 3
	benchStdoutMiB = 32
)

// benchInVM: envd-bench run inside the guest, through envd, against envd
// itself: Start latency of /bin/true beside fork+exec+wait, and stdout
// throughput beside Go reading a pipe, both limits measured by the same
// process in the same VM.
func (s *suite) benchInVM(ctx context.Context) (string, error) {
	bin := filepath.Join(s.work, "envd-bench")
	if err := goBuild(ctx, "cmd/envd-bench", bin); err != nil {
		return "", err
	}
	const guestBin = "/usr/local/bin/envd-bench"
	if err := s.putExecutable(ctx, bin, guestBin); err != nil {
		return "", err
	}
	args := []string{"-url", "http://127.0.0.1:49983", "-pid", "1", "-user", "root", "-only", "^(start|stdout)$",
		"-iters", strconv.Itoa(benchIters), "-reps", strconv.Itoa(benchReps), "-stdout-mib", strconv.Itoa(benchStdoutMiB), "-timeout", "150s"}
	if s.c.Token != "" {
		args = append(args, "-token", s.c.Token)
	}
	r, err := s.c.Run(ctx, "root", guestBin, args...)
	if err != nil {
		return "", fmt.Errorf("envd-bench in the guest: %w", err)
	}
	if err := r.OK(); err != nil {
		return "", fmt.Errorf("envd-bench in the guest: %w\n%s", err, r.Stdout)
	}
	return benchSummary(r.Stdout, s.accel.Name)
}

var (
	benchCPUs      = regexp.MustCompile(`, (\d+) CPUs,`)
	benchClientCPU = regexp.MustCompile(`daemon CPU per GiB of stdout: for scale: this benchmark's own client .* used ([0-9.]+ s) per GiB`)
)

// benchSummary picks envd-bench's Start and stdout rows out of its table;
// a row missing or in error fails the check.
func benchSummary(out, accel string) (string, error) {
	find := func(prefix string) ([]string, error) {
		for _, l := range strings.Split(out, "\n") {
			cells := strings.Split(strings.Trim(strings.TrimSpace(l), "|"), "|")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			if len(cells) != 6 || !strings.HasPrefix(cells[0], prefix) || strings.Contains(cells[0], "not accepting gzip") {
				continue
			}
			if cells[5] == "ERROR" || strings.HasPrefix(cells[1], "error") || cells[3] == "—" {
				return nil, fmt.Errorf("envd-bench row %q: %s", cells[0], strings.Join(cells[1:], " | "))
			}
			return cells, nil
		}
		return nil, fmt.Errorf("no %q row in envd-bench's output:\n%s", prefix, out)
	}
	start, err := find("Start /bin/true")
	if err != nil {
		return "", err
	}
	stdout, err := find("stdout stream of")
	if err != nil {
		return "", err
	}
	cpus := "?"
	if m := benchCPUs.FindStringSubmatch(out); m != nil {
		cpus = m[1]
	}
	detail := fmt.Sprintf("inside the guest (%s, %s vCPUs), envd-bench -url 127.0.0.1:49983 -pid 1 -iters %d -reps %d: %s: envd %s, %s, %s; %s: envd %s, %s, %s",
		accel, cpus, benchIters, benchReps, start[0], start[1], start[2], start[3], stdout[0], stdout[1], stdout[2], stdout[3])
	if cpu, err := find("daemon CPU per GiB of stdout"); err == nil {
		detail += fmt.Sprintf("; envd CPU per GiB of stdout %s, %s, %s", cpu[1], cpu[2], cpu[3])
		// The client shares the guest's vCPUs with envd: its own cost says
		// how much of the stream's time was not envd's.
		if m := benchClientCPU.FindStringSubmatch(out); m != nil {
			detail += "; envd-bench's own client " + m[1] + " per GiB"
		}
	} else {
		detail += "; envd CPU per GiB: " + oneLine(firstLine(err.Error()))
	}
	return detail, nil
}
