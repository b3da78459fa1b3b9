// Package sysstat produces the numbers of GET /metrics (§7.2) from /proc and
// statfs, without third-party collectors. The parsers are pure functions over
// kernel text; Sampler reads the files under an injectable proc root.
package sysstat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// CPUTimes is the aggregate "cpu" line of /proc/stat, in USER_HZ ticks.
type CPUTimes struct {
	Busy  uint64 // everything but idle and iowait
	Total uint64 // every state, guest time counted once
}

// ParseStat reads /proc/stat text: the aggregate CPU times and the number of
// per-CPU lines, which is the count of online logical CPUs.
func ParseStat(r io.Reader) (CPUTimes, int, error) {
	var (
		times CPUTimes
		found bool
		count int
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			if _, err := strconv.Atoi(fields[0][3:]); err == nil {
				count++
			}
			continue
		}
		t, err := parseCPULine(fields[1:])
		if err != nil {
			return CPUTimes{}, 0, err
		}
		times, found = t, true
	}
	if err := sc.Err(); err != nil {
		return CPUTimes{}, 0, fmt.Errorf("read stat: %w", err)
	}
	if !found {
		return CPUTimes{}, 0, errors.New("parse stat: no aggregate cpu line")
	}
	return times, count, nil
}

// parseCPULine sums user nice system idle iowait irq softirq steal [guest
// guest_nice]. The kernel already includes guest time in user and nice, so it
// is not added again.
func parseCPULine(fields []string) (CPUTimes, error) {
	if len(fields) < 4 {
		return CPUTimes{}, fmt.Errorf("parse stat: cpu line has %d fields", len(fields))
	}
	var v [8]uint64
	for i := 0; i < len(fields) && i < len(v); i++ {
		n, err := strconv.ParseUint(fields[i], 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("parse stat: cpu field %d: %w", i, err)
		}
		v[i] = n
	}
	var total uint64
	for _, n := range v {
		total += n
	}
	idle := v[3] + v[4]
	return CPUTimes{Busy: total - idle, Total: total}, nil
}

// BusyPercent is the share of non-idle time between two samples, 0–100,
// rounded to two decimals. No elapsed ticks (or a counter going backwards)
// reads as 0.
func BusyPercent(prev, cur CPUTimes) float64 {
	if cur.Total <= prev.Total {
		return 0
	}
	var busy uint64
	if cur.Busy > prev.Busy {
		busy = cur.Busy - prev.Busy
	}
	pct := float64(busy) / float64(cur.Total-prev.Total) * 100
	return math.Round(min(pct, 100)*100) / 100
}

// MemInfo holds the /proc/meminfo fields /metrics needs, in bytes.
type MemInfo struct {
	Total, Available, Cached, SReclaimable uint64
}

// ParseMeminfo reads /proc/meminfo text. MemTotal is required; MemAvailable
// exists on every kernel since 3.14, older ones are not supported.
func ParseMeminfo(r io.Reader) (MemInfo, error) {
	var m MemInfo
	want := map[string]*uint64{
		"MemTotal":     &m.Total,
		"MemAvailable": &m.Available,
		"Cached":       &m.Cached,
		"SReclaimable": &m.SReclaimable,
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		dst, interesting := want[key]
		if !ok || !interesting {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return MemInfo{}, fmt.Errorf("parse meminfo: %s has no value", key)
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return MemInfo{}, fmt.Errorf("parse meminfo %s: %w", key, err)
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		*dst = n
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return MemInfo{}, fmt.Errorf("read meminfo: %w", err)
	}
	if !seen["MemTotal"] || !seen["MemAvailable"] {
		return MemInfo{}, errors.New("parse meminfo: MemTotal or MemAvailable missing")
	}
	return m, nil
}

// Metrics is the /metrics body; JSON names are the wire contract.
type Metrics struct {
	Timestamp   int64   `json:"ts"`
	CPUCount    uint32  `json:"cpu_count"`
	CPUUsedPct  float32 `json:"cpu_used_pct"`
	MemTotalMiB uint64  `json:"mem_total_mib"`
	MemUsedMiB  uint64  `json:"mem_used_mib"`
	MemTotal    uint64  `json:"mem_total"`
	MemUsed     uint64  `json:"mem_used"`
	MemCache    uint64  `json:"mem_cache"`
	DiskUsed    uint64  `json:"disk_used"`
	DiskTotal   uint64  `json:"disk_total"`
}

// Sampler collects Metrics. cpu_used_pct covers the time since the previous
// Sample (or since NewSampler for the first one), as the existing envds do.
type Sampler struct {
	procRoot string
	diskPath string
	now      func() time.Time

	mu   sync.Mutex
	prev CPUTimes
}

// NewSampler reads under procRoot (normally /proc) and reports the
// filesystem holding diskPath (normally /).
func NewSampler(procRoot, diskPath string, now func() time.Time) *Sampler {
	s := &Sampler{procRoot: procRoot, diskPath: diskPath, now: now}
	if times, _, err := s.readStat(); err == nil {
		s.prev = times
	}
	return s
}

// Sample returns the current figures.
func (s *Sampler) Sample() (Metrics, error) {
	times, cpus, err := s.readStat()
	if err != nil {
		return Metrics{}, err
	}
	f, err := os.Open(filepath.Join(s.procRoot, "meminfo"))
	if err != nil {
		return Metrics{}, fmt.Errorf("open meminfo: %w", err)
	}
	mem, err := ParseMeminfo(f)
	f.Close()
	if err != nil {
		return Metrics{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.diskPath, &st); err != nil {
		return Metrics{}, fmt.Errorf("statfs %s: %w", s.diskPath, err)
	}
	diskTotal, diskAvail := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)

	s.mu.Lock()
	pct := BusyPercent(s.prev, times)
	s.prev = times
	s.mu.Unlock()

	used := mem.Total - min(mem.Available, mem.Total)
	return Metrics{
		Timestamp:   s.now().Unix(),
		CPUCount:    uint32(cpus),
		CPUUsedPct:  float32(pct),
		MemTotalMiB: mem.Total / (1 << 20),
		MemUsedMiB:  used / (1 << 20),
		MemTotal:    mem.Total,
		MemUsed:     used,
		MemCache:    mem.Cached + mem.SReclaimable,
		DiskUsed:    diskTotal - min(diskAvail, diskTotal),
		DiskTotal:   diskTotal,
	}, nil
}

func (s *Sampler) readStat() (CPUTimes, int, error) {
	f, err := os.Open(filepath.Join(s.procRoot, "stat"))
	if err != nil {
		return CPUTimes{}, 0, fmt.Errorf("open stat: %w", err)
	}
	defer f.Close()
	return ParseStat(f)
}
