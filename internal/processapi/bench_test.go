package processapi_test

import (
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"

	pb "github.com/envd-dev/envd/internal/gen/process"
	"github.com/envd-dev/envd/internal/proc"
)

// Each wire benchmark has a Raw twin measuring the same work done directly
// from Go on this machine, so the ratio is what envd adds.

// logModes run each wire benchmark with the output log (the default) and
// without it, in the same run, for the log's cost (issue 13).
var logModes = []struct {
	name string
	opt  func(*proc.Options)
}{
	{"log", func(*proc.Options) {}},
	{"nolog", func(o *proc.Options) { o.LogLimit = -1 }},
}

func BenchmarkStartTrue(b *testing.B) {
	for _, codec := range []string{"proto", "json"} {
		for _, mode := range logModes {
			b.Run("Wire/"+codec+"/"+mode.name, func(b *testing.B) {
				s := newServer(b, mode.opt)
				c := s.client
				if codec == "json" {
					c = s.json
				}
				req := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/bin/true"}, Stdin: ptr(false)}
				for b.Loop() {
					if ev := run(b, c, req); ev.end == nil {
						b.Fatal("no end event")
					}
				}
			})
		}
	}
	b.Run("Raw", func(b *testing.B) {
		attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Setpgid: true}}
		for b.Loop() {
			pid, err := syscall.ForkExec("/bin/true", []string{"/bin/true"}, attr)
			if err != nil {
				b.Fatal(err)
			}
			var st syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &st, 0, nil); err != nil || st.ExitStatus() != 0 {
				b.Fatal(err, st)
			}
		}
	})
}

const streamBytes = 512 << 20

func BenchmarkStdout512M(b *testing.B) {
	for _, mode := range logModes {
		b.Run("Wire/"+mode.name, func(b *testing.B) {
			s := newServer(b, mode.opt)
			req := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "head", Args: []string{"-c", "512M", "/dev/zero"}}, Stdin: ptr(false)}
			b.SetBytes(streamBytes)
			cpu := cpuTime(b)
			for b.Loop() {
				st, err := s.client.Start(b.Context(), req)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for st.Receive() {
					n += len(st.Msg().GetEvent().GetData().GetStdout())
				}
				if err := st.Err(); err != nil || n != streamBytes {
					b.Fatal(err, n)
				}
				st.Close()
			}
			cpu.report(b)
		})
	}
	b.Run("Raw", func(b *testing.B) {
		b.SetBytes(streamBytes)
		buf := make([]byte, 32<<10)
		cpu := cpuTime(b)
		for b.Loop() {
			c := exec.Command("head", "-c", "512M", "/dev/zero")
			out, err := c.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, out, buf)
			if err != nil || n != streamBytes {
				b.Fatal(err, n)
			}
			if err := c.Wait(); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b)
	})
}

// cpuClock measures this process's CPU time (the in-process daemon and its
// client, not the child writing the output): less disturbed by other load
// on a shared machine than throughput.
type cpuClock struct{ start time.Duration }

func cpuTime(b *testing.B) cpuClock { return cpuClock{selfCPU(b)} }

func (c cpuClock) report(b *testing.B) {
	used := selfCPU(b) - c.start
	b.ReportMetric(used.Seconds()/(float64(b.N)*streamBytes/(1<<30)), "cpu-s/GiB")
}

func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
