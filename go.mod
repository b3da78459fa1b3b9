module github.com/envd-dev/envd

go 1.26.8

require (
	connectrpc.com/connect v1.21.1
	github.com/klauspost/compress v1.20.3
	golang.org/x/sys v0.50.0
	google.golang.org/protobuf v1.36.12
)
