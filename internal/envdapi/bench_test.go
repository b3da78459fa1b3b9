package envdapi_test

import (
	"testing"

	ppb "github.com/envd-dev/envd/internal/gen/process"
)

// What a cgroup per command adds to Start (mkdir, open, CLONE_INTO_CGROUP,
// then usage read and rmdir at the end), beside no placement, same run.
func BenchmarkStartTrueCgroup(b *testing.B) {
	cg, _ := testCgroups(b)
	for _, tc := range []struct {
		name string
		o    options
	}{{"percommand", options{cgroups: cg}}, {"none", options{}}} {
		b.Run(tc.name, func(b *testing.B) {
			s := newServer(b, tc.o)
			req := &ppb.StartRequest{Process: &ppb.ProcessConfig{Cmd: "/bin/true"}, Stdin: ptr(false)}
			for b.Loop() {
				st, err := s.process.Start(b.Context(), req)
				if err != nil {
					b.Fatal(err)
				}
				ended := false
				for st.Receive() {
					ended = ended || st.Msg().GetEvent().GetEnd() != nil
				}
				if err := st.Err(); err != nil || !ended {
					b.Fatal(err, ended)
				}
				st.Close()
			}
		})
	}
}
