module github.com/envd-dev/envd/cmd/envdctl

go 1.26.8

replace github.com/envd-dev/envd => ../..

require (
	github.com/envd-dev/envd v0.0.0
	github.com/schollz/progressbar/v3 v3.19.1
	golang.org/x/term v0.47.0
)

require (
	connectrpc.com/connect v1.21.1 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	golang.org/x/sys v0.50.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
