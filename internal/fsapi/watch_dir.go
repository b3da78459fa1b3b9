package fsapi

import (
	"context"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/fswatch"
	"github.com/envd-dev/envd/internal/gen/filesystem"
	"github.com/envd-dev/envd/internal/keepalive"
)

// WatchDir streams start, then events and keepalives, until the client goes
// away, the deadline passes, the daemon closes or the watch fails (e.g. the
// kernel queue overflowed: the stream then ends with an error, so the client
// knows it missed events).
func (s *Service) WatchDir(ctx context.Context, req *filesystem.WatchDirRequest, stream *connect.ServerStream[filesystem.WatchDirResponse]) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()

	root, err := s.resolveWatchRoot(ctx, req.GetPath())
	if err != nil {
		return toConnect(err)
	}
	w, err := fswatch.Start(ctx, root, fswatch.Options{
		Pool:               &s.inotify,
		Recursive:          req.GetRecursive(),
		AllowNetworkMounts: req.GetAllowNetworkMounts(),
		Staged:             s.staged,
	})
	if err != nil {
		return toConnect(err)
	}
	if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Start{Start: &filesystem.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}

	interval := keepalive.Default
	if info, ok := connect.CallInfoForHandlerContext(ctx); ok {
		interval = keepalive.Interval(info.RequestHeader())
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	conv := eventConverter{root: root, includeEntry: req.GetIncludeEntry(), describer: s.describer()}
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil {
					s.log.Warn("watch failed", "path", root, "err", err)
					return toConnect(err)
				}
				return toConnect(context.Cause(ctx))
			}
			msg := &filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Filesystem{Filesystem: conv.convert(ev)}}
			if err := stream.Send(msg); err != nil {
				return err
			}
			timer.Reset(interval)
		case <-timer.C:
			if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Keepalive{Keepalive: &filesystem.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
			timer.Reset(interval)
		}
	}
}

func (s *Service) resolveWatchRoot(ctx context.Context, raw string) (string, error) {
	p, _, err := s.resolve(ctx, raw, true)
	return p, err
}

// eventConverter turns fswatch events into wire events, attaching an
// EntryInfo (absolute path) to CREATE/WRITE/CHMOD when asked (§9.3 item 7).
type eventConverter struct {
	root         string
	includeEntry bool
	describer    *fsops.Describer
}

func (c eventConverter) convert(ev fswatch.Event) *filesystem.FilesystemEvent {
	out := &filesystem.FilesystemEvent{Name: wireString(ev.Name)}
	switch ev.Op {
	case fswatch.Create:
		out.Type = filesystem.EventType_EVENT_TYPE_CREATE
	case fswatch.Write:
		out.Type = filesystem.EventType_EVENT_TYPE_WRITE
	case fswatch.Remove:
		out.Type = filesystem.EventType_EVENT_TYPE_REMOVE
	case fswatch.Rename:
		out.Type = filesystem.EventType_EVENT_TYPE_RENAME
	case fswatch.Chmod:
		out.Type = filesystem.EventType_EVENT_TYPE_CHMOD
	}
	if c.includeEntry && (ev.Op == fswatch.Create || ev.Op == fswatch.Write || ev.Op == fswatch.Chmod) {
		// The entry may be gone already; the event is still news without it.
		if e, err := c.describer.Describe(filepath.Join(c.root, ev.Name)); err == nil {
			out.Entry = entryInfo(e)
		}
	}
	return out
}
