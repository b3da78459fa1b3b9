package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// goCmd runs the go command on envd's own go.mod: GOWORK=off, so the
// workspace's other modules (go.work) neither add to nor raise what is seen.
func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go %v: %v\n%s", args, err, stderr)
	}
	return string(out)
}

func TestNoUnexpectedDependencies(t *testing.T) {
	out := goCmd(t, ".", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	for _, pkg := range strings.Fields(out) {
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

// envd's go.mod requires exactly the modules that envd and its tests link:
// build tools live in tools/go.mod and the benchmark in cmd/envd-bench/go.mod,
// so a fresh machine building envd fetches and compiles nothing else.
func TestGoModRequiresOnlyWhatEnvdLinks(t *testing.T) {
	root := filepath.Dir(strings.TrimSpace(goCmd(t, ".", "env", "GOMOD")))
	var mod struct{ Require []struct{ Path string } }
	if err := json.Unmarshal([]byte(goCmd(t, root, "mod", "edit", "-json")), &mod); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, m := range strings.Fields(goCmd(t, root, "list", "-deps", "-test", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", "./...")) {
		used[m] = true
	}
	var required []string
	for _, r := range mod.Require {
		required = append(required, r.Path)
		if !used[r.Path] {
			t.Errorf("go.mod requires %s, which neither envd nor its tests link", r.Path)
		}
	}
	for m := range used {
		if !slices.Contains(required, m) {
			t.Errorf("envd or its tests link %s, which go.mod does not list", m)
		}
	}
}
