package config

import (
	"io"
	"testing"
)

func TestParseAcceptsBothDashStyles(t *testing.T) {
	for _, args := range [][]string{
		{"-port", "1", "-isnotfc", "-no-cgroups", "-verbose", "-cgroup-root", "/x", "-cmd", "echo hi"},
		{"--port", "1", "--isnotfc", "--no-cgroups", "--verbose", "--cgroup-root=/x", "--cmd=echo hi"},
	} {
		c, err := Parse(args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if c.Port != 1 || !c.IsNotFC || !c.NoCgroups || !c.Verbose || c.CgroupRoot != "/x" || c.Cmd != "echo hi" {
			t.Fatalf("%v parsed as %+v", args, c)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 49983 || c.CgroupRoot != "/sys/fs/cgroup" || c.IsNotFC || c.NoCgroups {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestParseRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{{"-port", "x"}, {"-port", "70000"}, {"-nope"}, {"stray"}} {
		if _, err := Parse(args, io.Discard); err == nil {
			t.Errorf("%v: want error", args)
		}
	}
}

func TestParseVersionFlags(t *testing.T) {
	c, err := Parse([]string{"-version", "--commit", "-resume-handover"}, io.Discard)
	if err != nil || !c.Version || !c.Commit || !c.ResumeHandover {
		t.Fatalf("%+v %v", c, err)
	}
}

// A chained upgrade execs with the flag once more per upgrade (§18.1).
func TestParseRepeatedResumeHandover(t *testing.T) {
	c, err := Parse([]string{"-isnotfc", "--resume-handover", "--resume-handover"}, io.Discard)
	if err != nil || !c.ResumeHandover || !c.IsNotFC {
		t.Fatalf("%+v %v", c, err)
	}
	if c, _ := Parse(nil, io.Discard); c.ResumeHandover {
		t.Fatal("resume-handover set without the flag")
	}
}
