package fsapi

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	pb "github.com/envd-dev/envd/internal/gen/filesystem"
)

// LegacyHeader marks a response trimmed for an early Python SDK (§18.7).
const LegacyHeader = "X-E2B-Legacy-SDK"

// legacySDK is the first User-Agent of the early Python SDKs, which raised on
// any response field they did not know. Later ones send e2b-python-sdk/<v>;
// "connect-python/1.0" is not them either.
const legacySDK = "connect-python"

func isLegacy(h http.Header) bool {
	ua := h.Values("User-Agent")
	return len(ua) > 0 && ua[0] == legacySDK
}

// legacyInterceptor keeps responses to those SDKs inside the schema they were
// built with: entries carry only name, type and path, events only name and
// type. Those fields keep their numbers and JSON names, so the conversion is
// a matter of dropping the others. Errors pass unchanged.
type legacyInterceptor struct{}

func (legacyInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil || !isLegacy(req.Header()) {
			return resp, err
		}
		if downConvert(resp.Any()) {
			resp.Header().Set(LegacyHeader, "true")
		}
		return resp, nil
	}
}

func (legacyInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (legacyInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if !isLegacy(conn.RequestHeader()) {
			return next(ctx, conn)
		}
		conn.ResponseHeader().Set(LegacyHeader, "true")
		return next(ctx, legacyStream{conn})
	}
}

// legacyStream trims WatchDir's filesystem events; start and keepalive
// messages have nothing to trim.
type legacyStream struct{ connect.StreamingHandlerConn }

func (s legacyStream) Send(msg any) error {
	if m, ok := msg.(*pb.WatchDirResponse); ok {
		if ev := m.GetFilesystem(); ev != nil {
			msg = &pb.WatchDirResponse{Event: &pb.WatchDirResponse_Filesystem{Filesystem: legacyEvent(ev)}}
		}
	}
	return s.StreamingHandlerConn.Send(msg)
}

// downConvert trims msg in place, replacing (never mutating) the entries and
// events it points to, which may be shared. It reports whether msg is a
// response with a legacy form: RemoveWatcher has none and passes unmarked.
func downConvert(msg any) bool {
	switch m := msg.(type) {
	case *pb.StatResponse:
		m.Entry = legacyEntry(m.Entry)
	case *pb.MakeDirResponse:
		m.Entry = legacyEntry(m.Entry)
	case *pb.MoveResponse:
		m.Entry = legacyEntry(m.Entry)
	case *pb.ListDirResponse:
		entries := make([]*pb.EntryInfo, len(m.Entries))
		for i, e := range m.Entries {
			entries[i] = legacyEntry(e)
		}
		m.Entries = entries
	case *pb.GetWatcherEventsResponse:
		events := make([]*pb.FilesystemEvent, len(m.Events))
		for i, ev := range m.Events {
			events[i] = legacyEvent(ev)
		}
		m.Events = events
	case *pb.RemoveResponse, *pb.CreateWatcherResponse:
		// Same content in the legacy schema.
	default:
		return false
	}
	return true
}

func legacyEntry(e *pb.EntryInfo) *pb.EntryInfo {
	if e == nil {
		return nil
	}
	return &pb.EntryInfo{Name: e.GetName(), Type: e.GetType(), Path: e.GetPath()}
}

func legacyEvent(ev *pb.FilesystemEvent) *pb.FilesystemEvent {
	if ev == nil {
		return nil
	}
	return &pb.FilesystemEvent{Name: ev.GetName(), Type: ev.GetType()}
}
