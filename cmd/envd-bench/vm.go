package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envd-dev/envd/e2e/vm"
)

// vmOptions is the -vm mode: boot figures of envd as PID 1 of a qemu VM
// (the image of scripts/vm-image), beside the trivial static Go HTTP server
// of that image booted by the same pre-init as PID 1 of the same VM, in
// alternating boots of the same run. Under TCG absolute times mean little;
// the ratios do.
type vmOptions struct {
	enabled bool
	image   string
	boots   int
}

func vmFlags(fs *flag.FlagSet) *vmOptions {
	o := &vmOptions{}
	fs.BoolVar(&o.enabled, "vm", false, "boot figures: envd as PID 1 of a qemu VM beside a trivial Go server as PID 1 (run under flock /tmp/envd-vm.lock)")
	fs.StringVar(&o.image, "vm-image", "", "with -vm: image directory (default: the output of ./scripts/vm-image)")
	fs.IntVar(&o.boots, "vm-boots", 3, "with -vm: boots of each, alternating; medians are reported")
	return o
}

// bootSample is one boot, in guest uptime seconds except hostHealthy.
type bootSample struct {
	execAt      float64       // the pre-init execs PID 1
	startAt     float64       // PID 1's main runs
	listenAt    float64       // PID 1 listens
	hostHealthy time.Duration // qemu started → first 200 on /health, on the host
}

func (o *vmOptions) run(stdout, stderr io.Writer) int {
	logf := func(f string, a ...any) { fmt.Fprintf(stderr, "envd-bench: "+f+"\n", a...) }
	if o.image == "" {
		out, err := exec.Command("./scripts/vm-image").Output()
		if err != nil {
			logf("-vm: ./scripts/vm-image (run from the repository root, as root): %v", err)
			return 1
		}
		o.image = strings.TrimSpace(string(out))
	}
	work, err := os.MkdirTemp("", "envd-bench-vm-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	accel := vm.ChooseAccel(o.image, work)
	logf("-vm: accelerator %s", accel)
	mmds, err := vm.ServeMMDS(map[string]any{"instanceID": "bench", "envID": "bench", "accessTokenHash": ""})
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer mmds.Close()
	var envd, triv []bootSample
	for i := range o.boots {
		for _, init := range []string{"", "/usr/local/bin/trivial-http"} {
			name := "envd"
			if init != "" {
				name = "trivial-http"
			}
			logf("-vm: boot %d/%d of %s", i+1, o.boots, name)
			s, err := bootOnce(vm.Config{Image: o.image, WorkDir: fmt.Sprintf("%s/%s-%d", work, name, i), Init: init,
				MMDSPort: mmds.Port, Accel: accel})
			if err != nil {
				logf("-vm: %s: %v", name, err)
				return 1
			}
			if init == "" {
				envd = append(envd, s)
			} else {
				triv = append(triv, s)
			}
		}
	}
	fmt.Fprintf(stdout, "envd-bench: -vm boot figures, %s, %d boots each, %d host CPUs, load %s, %s\n\n", accel, o.boots, runtime.NumCPU(), loadAvg(), time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintln(stdout, "| boot (medians) | envd as PID 1 | trivial Go HTTP server as PID 1 | ratio |")
	fmt.Fprintln(stdout, "|---|---|---|---|")
	med := func(ss []bootSample, f func(bootSample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rowf := func(name string, f func(bootSample) float64, unit string) {
		a, b := med(envd, f), med(triv, f)
		fmt.Fprintf(stdout, "| %s | %.3f %s | %.3f %s | %.2f× |\n", name, a, unit, b, unit, a/b)
	}
	// The uptimes before exec are the kernel's and the pre-init's, the same
	// for both: their ratio shows the noise of the run, the intervals after
	// exec are what differs.
	rowf("guest uptime when the pre-init execs PID 1", func(s bootSample) float64 { return s.execAt }, "s")
	rowf("guest uptime when PID 1 starts", func(s bootSample) float64 { return s.startAt }, "s")
	rowf("guest uptime when PID 1 first listens", func(s bootSample) float64 { return s.listenAt }, "s")
	rowf("exec of PID 1 → its main runs", func(s bootSample) float64 { return (s.startAt - s.execAt) * 1000 }, "ms")
	rowf("main runs → listening", func(s bootSample) float64 { return (s.listenAt - s.startAt) * 1000 }, "ms")
	rowf("exec of PID 1 → listening", func(s bootSample) float64 { return (s.listenAt - s.execAt) * 1000 }, "ms")
	rowf("qemu started → /health answered (host clock)", func(s bootSample) float64 { return s.hostHealthy.Seconds() }, "s")
	return 0
}

// bootOnce boots one VM, reads its boot figures and kills it.
func bootOnce(cfg vm.Config) (bootSample, error) {
	var s bootSample
	m, err := vm.Start(cfg)
	if err != nil {
		return s, err
	}
	defer m.Kill()
	timeout := 240 * time.Second
	if s.hostHealthy, err = m.WaitHealthy(context.Background(), timeout); err != nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	console, err := os.ReadFile(m.Console)
	if err != nil {
		return s, err
	}
	if s.execAt, err = preinitExec(console); err != nil {
		return s, err
	}
	c := vm.NewClient(m.URL)
	if cfg.Init != "" {
		code, body, err := c.Get(ctx, "/boot")
		if err != nil || code != 200 {
			return s, fmt.Errorf("GET /boot: %d %q %v", code, body, err)
		}
		if _, err := fmt.Sscan(body, &s.startAt, &s.listenAt); err != nil {
			return s, fmt.Errorf("GET /boot: %q: %v", body, err)
		}
		return s, nil
	}
	// envd's log has wall-clock times; one reading of both clocks in the
	// guest, before anything set its clock, maps them to uptime.
	out, err := c.Output(ctx, "root", `exec python3 -c 'import time; print(time.clock_gettime(time.CLOCK_BOOTTIME), time.time())'`)
	if err != nil {
		return s, err
	}
	var boot, wall float64
	if _, err := fmt.Sscan(out, &boot, &wall); err != nil {
		return s, fmt.Errorf("guest clocks %q: %v", out, err)
	}
	first, listen, err := envdLogTimes(console)
	if err != nil {
		return s, err
	}
	offset := wall - boot
	s.startAt = first - offset
	s.listenAt = listen - offset
	return s, nil
}

// preinitExec is the uptime the pre-init printed before exec'ing PID 1.
func preinitExec(console []byte) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(string(console)))
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "pre-init: exec "); ok {
			if _, up, ok := strings.Cut(rest, " at uptime "); ok {
				return strconv.ParseFloat(strings.TrimSpace(up), 64)
			}
		}
	}
	return 0, errors.New("no 'pre-init: exec' line on the console")
}

// envdLogTimes are the wall times, in Unix seconds, of envd's first log
// line and of "envd listening".
func envdLogTimes(console []byte) (first, listen float64, err error) {
	sc := bufio.NewScanner(strings.NewReader(string(console)))
	for sc.Scan() {
		line := sc.Text()
		i := strings.IndexByte(line, '{')
		if i < 0 {
			continue
		}
		var m struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line[i:]), &m) != nil || m.Time.IsZero() {
			continue
		}
		t := float64(m.Time.UnixNano()) / 1e9
		if first == 0 {
			first = t
		}
		if m.Msg == "envd listening" {
			return first, t, nil
		}
	}
	return 0, 0, errors.New("no 'envd listening' line in envd's log on the console")
}
