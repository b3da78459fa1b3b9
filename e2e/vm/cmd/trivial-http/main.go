// Command trivial-http is the reference for envd's boot figures: the smallest
// static Go HTTP server, booted by the same pre-init as PID 1 of the same VM
// (envd-bench -vm). GET /boot gives CLOCK_BOOTTIME, in seconds, when main
// started and when the listener was open, which is what envd's log gives.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
	"unsafe"
)

const clockBoottime = 7

func uptime() float64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockBoottime, uintptr(unsafe.Pointer(&ts)), 0)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func main() {
	start := uptime()
	ln, err := net.Listen("tcp", ":49983")
	if err != nil {
		fmt.Fprintln(os.Stderr, "trivial-http:", err)
		for { // PID 1 must not exit
			time.Sleep(time.Hour)
		}
	}
	listen := uptime()
	http.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "{\"version\":\"0\"}\n")
	})
	http.HandleFunc("GET /boot", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%.6f %.6f %.6f\n", start, listen, uptime())
	})
	for {
		fmt.Fprintln(os.Stderr, "trivial-http:", http.Serve(ln, nil))
	}
}
