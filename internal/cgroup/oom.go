package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Scores for oom_score_adj (-1000 … 1000).
const (
	// EnvdScore makes the kernel never pick envd: losing it loses the
	// sandbox's only control channel.
	EnvdScore = -1000
	// UserScore makes user processes slightly preferred victims over the
	// rest of the guest, the opposite of envd's protection.
	UserScore = 100
)

// OOM writes oom_score_adj under ProcRoot.
//
// A child inherits oom_score_adj at fork, so every process envd starts would
// be as unkillable as envd. Go offers no hook between fork and exec, so the
// process supervisor must call Reset(pid) right after ForkExec returns and
// before the process is announced to the client. Raising the score needs no
// privilege. What remains is a window of microseconds after exec in which the
// new program runs at EnvdScore; a child forked in that window keeps it.
type OOM struct {
	ProcRoot string // "/proc"
}

// Protect gives the calling process EnvdScore.
func (o OOM) Protect() error { return o.set("self", EnvdScore) }

// Reset gives pid UserScore.
func (o OOM) Reset(pid int) error { return o.set(strconv.Itoa(pid), UserScore) }

// Score reads pid's oom_score_adj ("self" for the caller).
func (o OOM) Score(pid string) (int, error) {
	b, err := os.ReadFile(filepath.Join(o.ProcRoot, pid, "oom_score_adj"))
	if err != nil {
		return 0, fmt.Errorf("read oom_score_adj: %w", err)
	}
	n, err := strconv.Atoi(string(trimNL(b)))
	if err != nil {
		return 0, fmt.Errorf("parse oom_score_adj: %w", err)
	}
	return n, nil
}

func (o OOM) set(pid string, score int) error {
	if err := os.WriteFile(filepath.Join(o.ProcRoot, pid, "oom_score_adj"), []byte(strconv.Itoa(score)), 0); err != nil {
		return fmt.Errorf("set oom_score_adj: %w", err)
	}
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
