package main

import (
	"os/exec"
	"strings"
	"testing"
)

// allowedModules are the only third-party modules the envd binary may link.
// Every byte of the binary ships in each VM image, and each module is code
// running as root inside the sandbox: a new one is a decision, not an accident.
var allowedModules = []string{
	"connectrpc.com/connect",
	"google.golang.org/protobuf",
	"golang.org/x/sys",
	"github.com/klauspost/compress", // gzip for /files, ~2x compress/gzip
	"github.com/envd-dev/envd",
}

func TestNoUnexpectedDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		ok := false
		for _, m := range allowedModules {
			if pkg == m || strings.HasPrefix(pkg, m+"/") {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("envd links %s, which is not in allowedModules", pkg)
		}
	}
}
