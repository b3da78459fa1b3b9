package fsapi

import (
	"context"
	"path/filepath"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/fswatch"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// defaultKeepalive applies when Keepalive-Ping-Interval is missing or invalid.
const defaultKeepalive = 90 * time.Second

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
		Recursive:          req.GetRecursive(),
		AllowNetworkMounts: req.GetAllowNetworkMounts(),
	})
	if err != nil {
		return toConnect(err)
	}
	if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Start{Start: &filesystem.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}

	interval := keepaliveInterval(ctx)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	conv := eventConverter{root: root, includeEntry: req.GetIncludeEntry(), describer: fsops.NewDescriber()}
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

// keepaliveInterval reads Keepalive-Ping-Interval (whole seconds), as the
// process stream does (§8.1 item 11).
func keepaliveInterval(ctx context.Context) time.Duration {
	info, ok := connect.CallInfoForHandlerContext(ctx)
	if !ok {
		return defaultKeepalive
	}
	n, err := strconv.Atoi(info.RequestHeader().Get("Keepalive-Ping-Interval"))
	if err != nil || n <= 0 {
		return defaultKeepalive
	}
	return time.Duration(n) * time.Second
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
