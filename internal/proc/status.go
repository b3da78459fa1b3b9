package proc

import (
	"strconv"
	"syscall"
)

// Result is how a process ended, in the shape of Go's os.ProcessState, which
// the clients' expectations (§8.1) were written against.
type Result struct {
	ExitCode int  // -1 when killed by a signal
	Exited   bool // false when killed by a signal
	Status   string
	Err      string // empty only for exit status 0
}

func resultOf(st syscall.WaitStatus) Result {
	switch {
	case st.Exited():
		r := Result{ExitCode: st.ExitStatus(), Exited: true, Status: "exit status " + strconv.Itoa(st.ExitStatus())}
		if r.ExitCode != 0 {
			r.Err = r.Status
		}
		return r
	case st.Signaled():
		s := "signal: " + st.Signal().String()
		if st.CoreDump() {
			s += " (core dumped)"
		}
		return Result{ExitCode: -1, Status: s, Err: s}
	default:
		s := "unknown wait status " + strconv.Itoa(int(st))
		return Result{ExitCode: -1, Status: s, Err: s}
	}
}
