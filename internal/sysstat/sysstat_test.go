package sysstat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const statText = `cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335786 29970 493183 13524095 3417 0 3021 0 21740 0
cpu2 3707433 113932 1093458 9986106 3636 0 2222 0 65064 0
cpu3 3695654 113828 926022 9974990 3500 0 2077 0 64891 0
intr 199292253 33 9 0 0 0 0 3 0 1 0 0 0
ctxt 305315423
btime 1700000000
processes 1234567
procs_running 2
procs_blocked 0
softirq 1 2 3
`

func TestParseStat(t *testing.T) {
	times, n, err := ParseStat(strings.NewReader(statText))
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("cpus = %d, want 4", n)
	}
	// user..steal; guest columns are already inside user/nice.
	total := uint64(10132153 + 290696 + 3084719 + 46828483 + 16683 + 0 + 25195 + 0)
	if times.Total != total || times.Busy != total-46828483-16683 {
		t.Errorf("times = %+v, want total %d busy %d", times, total, total-46828483-16683)
	}
}

func TestParseStatBad(t *testing.T) {
	for name, text := range map[string]string{
		"empty":      "",
		"no cpu":     "intr 1 2\n",
		"short":      "cpu 1 2 3\n",
		"not number": "cpu 1 2 x 4 5\n",
	} {
		if _, _, err := ParseStat(strings.NewReader(text)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestBusyPercent(t *testing.T) {
	for _, c := range []struct {
		prev, cur CPUTimes
		want      float64
	}{
		{CPUTimes{Busy: 0, Total: 0}, CPUTimes{Busy: 25, Total: 100}, 25},
		{CPUTimes{Busy: 10, Total: 100}, CPUTimes{Busy: 11, Total: 103}, 33.33},
		{CPUTimes{Busy: 10, Total: 100}, CPUTimes{Busy: 10, Total: 100}, 0},
		{CPUTimes{Busy: 50, Total: 100}, CPUTimes{Busy: 40, Total: 90}, 0},
		{CPUTimes{Busy: 0, Total: 0}, CPUTimes{Busy: 7, Total: 7}, 100},
	} {
		if got := BusyPercent(c.prev, c.cur); got != c.want {
			t.Errorf("BusyPercent(%+v, %+v) = %v, want %v", c.prev, c.cur, got, c.want)
		}
	}
}

const meminfoText = `MemTotal:       16310824 kB
MemFree:         1229696 kB
MemAvailable:    9834452 kB
Buffers:          620468 kB
Cached:          7621868 kB
SwapCached:            0 kB
Active:          8311680 kB
SReclaimable:     524288 kB
SUnreclaim:       178932 kB
HugePages_Total:       0
`

func TestParseMeminfo(t *testing.T) {
	m, err := ParseMeminfo(strings.NewReader(meminfoText))
	if err != nil {
		t.Fatal(err)
	}
	want := MemInfo{Total: 16310824 * 1024, Available: 9834452 * 1024, Cached: 7621868 * 1024, SReclaimable: 524288 * 1024}
	if m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	if _, err := ParseMeminfo(strings.NewReader("MemFree: 1 kB\n")); err == nil {
		t.Error("meminfo without MemTotal parsed")
	}
	if _, err := ParseMeminfo(strings.NewReader("MemTotal: x kB\nMemAvailable: 1 kB\n")); err == nil {
		t.Error("non-numeric MemTotal parsed")
	}
}

// A fake proc root makes every field predictable, including the CPU delta
// between two samples.
func TestSamplerFakeProc(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", "cpu 100 0 0 100 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\n")
	write("meminfo", meminfoText)
	now := time.Unix(1700000000, 0)
	s := NewSampler(root, root, func() time.Time { return now })
	write("stat", "cpu 130 0 10 160 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0 0 0\n")
	m, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if m.Timestamp != 1700000000 || m.CPUCount != 2 || m.CPUUsedPct != 40 {
		t.Errorf("ts/cpu: %+v", m)
	}
	if m.MemTotal != 16310824*1024 || m.MemUsed != (16310824-9834452)*1024 || m.MemCache != (7621868+524288)*1024 ||
		m.MemTotalMiB != m.MemTotal>>20 || m.MemUsedMiB != m.MemUsed>>20 {
		t.Errorf("mem: %+v", m)
	}
	if m.DiskTotal == 0 || m.DiskUsed > m.DiskTotal {
		t.Errorf("disk: %+v", m)
	}
	// No time passed since the previous sample: 0%, not a stale figure.
	m, err = s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if m.CPUUsedPct != 0 {
		t.Errorf("second sample with no ticks: %v%%", m.CPUUsedPct)
	}
	os.Remove(filepath.Join(root, "meminfo"))
	if _, err := s.Sample(); err == nil {
		t.Error("sample without meminfo succeeded")
	}
}

func TestSamplerRealProc(t *testing.T) {
	s := NewSampler("/proc", "/", time.Now)
	m, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if m.CPUCount == 0 || m.MemTotal == 0 || m.MemUsed > m.MemTotal || m.DiskTotal == 0 || m.DiskUsed > m.DiskTotal ||
		m.CPUUsedPct < 0 || m.CPUUsedPct > 100 {
		t.Errorf("implausible metrics from the real /proc: %+v", m)
	}
}
