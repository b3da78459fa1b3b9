package client

import (
	"strconv"
	"strings"
)

// Signal is a Linux signal number. envd's wire enum names only SIGTERM and
// SIGKILL; other numbers are sent as they are. This envd accepts every
// standard signal (1-31); an older one or E2B's answers ErrInvalidArgument
// or ErrUnimplemented.
type Signal int32

const (
	SIGHUP  Signal = 1
	SIGINT  Signal = 2
	SIGQUIT Signal = 3
	SIGKILL Signal = 9
	SIGUSR1 Signal = 10
	SIGUSR2 Signal = 12
	SIGTERM Signal = 15
)

// goSignalNames are the strings Go's os.ProcessState prints after "signal: "
// (envd's EndEvent status), by Linux signal number.
var goSignalNames = map[string]int{
	"hangup": 1, "interrupt": 2, "quit": 3, "illegal instruction": 4, "trace/breakpoint trap": 5,
	"aborted": 6, "bus error": 7, "floating point exception": 8, "killed": 9, "user defined signal 1": 10,
	"segmentation fault": 11, "user defined signal 2": 12, "broken pipe": 13, "alarm clock": 14,
	"terminated": 15, "stack fault": 16, "child exited": 17, "continued": 18, "stopped (signal)": 19,
	"stopped": 20, "stopped (tty input)": 21, "stopped (tty output)": 22, "urgent I/O condition": 23,
	"CPU time limit exceeded": 24, "file size limit exceeded": 25, "virtual timer expired": 26,
	"profiling timer expired": 27, "window changed": 28, "I/O possible": 29, "power failure": 30,
	"bad system call": 31,
}

// signalFromStatus returns the signal number in a status such as
// "signal: killed" (or "signal 9" from other implementations), 0 if none.
func signalFromStatus(status string) int {
	rest, ok := strings.CutPrefix(status, "signal: ")
	if !ok {
		rest, ok = strings.CutPrefix(status, "signal ")
		if !ok {
			return 0
		}
	}
	rest = strings.TrimSuffix(rest, " (core dumped)")
	if n, ok := goSignalNames[rest]; ok {
		return n
	}
	if n, err := strconv.Atoi(strings.Fields(rest + " ")[0]); err == nil {
		return n
	}
	return 0
}

// linuxSignalNames are the names envd's exit reports use, by number.
var linuxSignalNames = [...]string{
	1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
	9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
	16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
	23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO",
	30: "SIGPWR", 31: "SIGSYS",
}

// signalNumber is the number of a name such as "SIGKILL", 0 if unknown.
func signalNumber(name string) int {
	for n, s := range linuxSignalNames {
		if s != "" && s == name {
			return n
		}
	}
	return 0
}
