module github.com/envd-dev/envd/cmd/envd-bench

go 1.26.8

require (
	connectrpc.com/connect v1.21.1
	github.com/creack/pty v1.1.24
	github.com/envd-dev/envd v0.0.0
	golang.org/x/sys v0.50.0
	google.golang.org/protobuf v1.36.12
)

require github.com/klauspost/compress v1.20.3 // indirect

// The bench drives this checkout's daemon (-profile runs it in-process), never a published one.
replace github.com/envd-dev/envd => ../..
