// Package client is a Go client for envd, the guest agent of a microVM
// sandbox, for host agents and tools that drive a sandbox from outside.
//
// One Client talks to one envd over one *http.Client (passed in with
// WithHTTPClient or defaulted: HTTP/1.1, or h2c with WithH2C). It covers the
// whole wire contract a host agent needs:
//
//   - processes: Run, Start (a *Process handle with its event stream), Connect
//     by PID or tag, input (SendInput, Process.Stdin, CloseStdin), Signal,
//     Resize, List;
//   - files: Upload and Download stream (never the whole file in memory), with
//     gzip on request, a byte Range, a progress callback, and SignedURL for
//     handing a URL to someone without the token;
//   - the filesystem: Stat, List (with depth), MakeDir, Move, Remove, Watch;
//   - the control endpoints: Init, Health and WaitHealthy (after boot and after
//     a snapshot restore), Envs, Metrics, SnapshotPrepare;
//   - the envd.v1 services, which only this envd has: ReadOutput (the log of a
//     process's output from any offset, live with Follow; evicted bytes are a
//     Gap event of the exact size, never skipped silently), WaitExit and
//     ListExits (exit reports: signal, OOM kill, peak memory, CPU time), and
//     WatchPorts and WaitForPort (TCP listeners opening and closing).
//
// Every error envd reports, whether as a Connect code or an HTTP status, is an
// *Error that matches one of the Err… kinds with errors.Is, so callers never
// parse a message:
//
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// Streams (process output, watches) ask envd for keepalive events every
// WithKeepalive interval (default 50 s, as the E2B SDKs) and fail with
// ErrUnavailable when nothing, not even a keepalive, arrives for three
// intervals: a dead peer behind a proxy that never resets the connection is
// detected instead of hanging forever.
package client
