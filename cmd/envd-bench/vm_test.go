package main

import "testing"

func TestVMConsoleFigures(t *testing.T) {
	console := []byte("pre-init: start at uptime 2.44\npre-init: exec /usr/local/bin/envd at uptime 2.88\n" +
		`{"time":"2026-12-02T06:09:29.5Z","level":"INFO","msg":"boot step done","step":"mount /proc"}` + "\n" +
		"[   3.0] kernel noise\n" +
		`{"time":"2026-12-02T06:09:29.75Z","level":"INFO","msg":"envd listening","addr":"[::]:49983"}` + "\n")
	up, err := preinitExec(console)
	if err != nil || up != 2.88 {
		t.Errorf("preinitExec = %v, %v; want 2.88", up, err)
	}
	first, listen, err := envdLogTimes(console)
	if err != nil {
		t.Fatal(err)
	}
	if d := listen - first; d < 0.2499 || d > 0.2501 {
		t.Errorf("listen - first = %v, want 0.25", d)
	}
	if _, err := preinitExec([]byte("no such line\n")); err == nil {
		t.Error("preinitExec found a line that is not there")
	}
	if _, _, err := envdLogTimes(console[:len(console)-80]); err == nil {
		t.Error("envdLogTimes without a listening line succeeded")
	}
}
