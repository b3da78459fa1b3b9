package processapi

import (
	"context"

	pb "github.com/envd-dev/envd/internal/gen/process"
)

// List reports running processes with their configuration as sent.
func (s *Service) List(ctx context.Context, _ *pb.ListRequest) (*pb.ListResponse, error) {
	infos := s.procs.List()
	out := &pb.ListResponse{Processes: make([]*pb.ProcessInfo, len(infos))}
	for i, in := range infos {
		pi := &pb.ProcessInfo{
			Pid:    uint32(in.Pid),
			Config: &pb.ProcessConfig{Cmd: in.Config.Cmd, Args: in.Config.Args, Envs: in.Config.Envs, Cwd: in.Config.Cwd},
		}
		if in.HasTag {
			pi.Tag = &in.Tag
		}
		out.Processes[i] = pi
	}
	return out, nil
}
