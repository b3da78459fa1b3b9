package client

import (
	"context"
	"io/fs"
	"time"

	pb "github.com/envd-dev/envd/internal/gen/filesystem"
)

// FileType is what an Entry is. envd reports a symlink as the type of what it
// points to (and sets Entry.SymlinkTarget).
type FileType string

const (
	TypeFile    FileType = "file"
	TypeDir     FileType = "dir"
	TypeSymlink FileType = "symlink"
	TypeOther   FileType = "other" // device, socket, fifo, broken link
)

// Entry describes a file or directory.
type Entry struct {
	Name          string            `json:"name"`
	Type          FileType          `json:"type"`
	Path          string            `json:"path"`
	Size          int64             `json:"size"`
	Mode          fs.FileMode       `json:"mode"` // permission bits
	Permissions   string            `json:"permissions"`
	Owner         string            `json:"owner"`
	Group         string            `json:"group"`
	ModTime       time.Time         `json:"modTime"`
	SymlinkTarget string            `json:"symlinkTarget,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

func entry(e *pb.EntryInfo) *Entry {
	if e == nil {
		return nil
	}
	out := &Entry{
		Name: e.GetName(), Path: e.GetPath(), Size: e.GetSize(), Mode: fs.FileMode(e.GetMode()),
		Permissions: e.GetPermissions(), Owner: e.GetOwner(), Group: e.GetGroup(),
		SymlinkTarget: e.GetSymlinkTarget(), Metadata: e.GetMetadata(),
	}
	if t := e.GetModifiedTime(); t != nil {
		out.ModTime = t.AsTime()
	}
	switch e.GetType() {
	case pb.FileType_FILE_TYPE_FILE:
		out.Type = TypeFile
	case pb.FileType_FILE_TYPE_DIRECTORY:
		out.Type = TypeDir
	case pb.FileType_FILE_TYPE_SYMLINK:
		out.Type = TypeSymlink
	default:
		out.Type = TypeOther
	}
	return out
}

// Stat describes path (a final symlink is not followed).
func (c *Client) Stat(ctx context.Context, path string) (*Entry, error) {
	res, err := c.fs.Stat(ctx, &pb.StatRequest{Path: path})
	if err != nil {
		return nil, rpcError("filesystem.Stat", err)
	}
	return entry(res.GetEntry()), nil
}

// ListDir lists the directory at path down to depth levels (0 or 1: its
// entries only), depth-first in lexical order.
func (c *Client) ListDir(ctx context.Context, path string, depth int) ([]Entry, error) {
	if depth < 1 {
		depth = 1
	}
	res, err := c.fs.ListDir(ctx, &pb.ListDirRequest{Path: path, Depth: uint32(depth)})
	if err != nil {
		return nil, rpcError("filesystem.ListDir", err)
	}
	out := make([]Entry, 0, len(res.GetEntries()))
	for _, e := range res.GetEntries() {
		out = append(out, *entry(e))
	}
	return out, nil
}

// MakeDir creates the directory at path with every missing parent, owned by
// the Client's user. An existing directory is ErrAlreadyExists.
func (c *Client) MakeDir(ctx context.Context, path string) (*Entry, error) {
	res, err := c.fs.MakeDir(ctx, &pb.MakeDirRequest{Path: path})
	if err != nil {
		return nil, rpcError("filesystem.MakeDir", err)
	}
	return entry(res.GetEntry()), nil
}

// Move renames src to dst (replacing a file there), creating dst's parents.
func (c *Client) Move(ctx context.Context, src, dst string) (*Entry, error) {
	res, err := c.fs.Move(ctx, &pb.MoveRequest{Source: src, Destination: dst})
	if err != nil {
		return nil, rpcError("filesystem.Move", err)
	}
	return entry(res.GetEntry()), nil
}

// Remove deletes path and everything under it; a missing path is no error.
func (c *Client) Remove(ctx context.Context, path string) error {
	_, err := c.fs.Remove(ctx, &pb.RemoveRequest{Path: path})
	return rpcError("filesystem.Remove", err)
}

// EventOp is what happened to a watched entry.
type EventOp string

const (
	OpCreate EventOp = "create"
	OpWrite  EventOp = "write"
	OpRemove EventOp = "remove"
	OpRename EventOp = "rename"
	OpChmod  EventOp = "chmod"
)

// FSEvent is one change under a watched directory.
type FSEvent struct {
	Name  string  `json:"name"` // relative to the watched directory
	Op    EventOp `json:"op"`
	Entry *Entry  `json:"entry,omitempty"` // with WatchOptions.IncludeEntry, for create/write/chmod
}

var eventOps = map[pb.EventType]EventOp{
	pb.EventType_EVENT_TYPE_CREATE: OpCreate, pb.EventType_EVENT_TYPE_WRITE: OpWrite,
	pb.EventType_EVENT_TYPE_REMOVE: OpRemove, pb.EventType_EVENT_TYPE_RENAME: OpRename,
	pb.EventType_EVENT_TYPE_CHMOD: OpChmod,
}

// WatchOptions adjusts Watch.
type WatchOptions struct {
	Recursive    bool // the whole subtree, including directories created later
	IncludeEntry bool // attach an Entry to create/write/chmod events
}

// Watcher delivers the events of one watch on Events until its context ends,
// Close is called, or the watch fails; then Events is closed and Err says why
// (nil after Close or a cancelled context).
type Watcher struct {
	events chan FSEvent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Events is the channel of events, in the order envd saw them.
func (w *Watcher) Events() <-chan FSEvent { return w.events }

// Err is why the watch ended, once Events is closed.
func (w *Watcher) Err() error {
	<-w.done
	return w.err
}

// Close stops the watch.
func (w *Watcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}

// Watch watches the directory at path. It returns once envd has started
// watching, so any change made after Watch returns is reported.
func (c *Client) Watch(ctx context.Context, path string, o WatchOptions) (*Watcher, error) {
	const op = "filesystem.WatchDir"
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.fs.WatchDir(ctx, &pb.WatchDirRequest{Path: path, Recursive: o.Recursive, IncludeEntry: o.IncludeEntry})
	if err != nil {
		cancel()
		return nil, rpcError(op, err)
	}
	wd := newWatchdog(c.keepalive, cancel)
	fail := func() error {
		defer st.Close()
		defer wd.stop()
		cancel()
		return watchEnd(op, wd, false, st.Err())
	}
	for started := false; !started; {
		if !st.Receive() {
			return nil, fail()
		}
		wd.reset()
		started = st.Msg().GetStart() != nil
	}
	w := &Watcher{events: make(chan FSEvent, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.events)
		defer wd.stop()
		defer st.Close()
		for st.Receive() {
			wd.reset()
			fe := st.Msg().GetFilesystem()
			if fe == nil {
				continue
			}
			ev := FSEvent{Name: fe.GetName(), Op: eventOps[fe.GetType()], Entry: entry(fe.GetEntry())}
			select {
			case w.events <- ev:
			case <-ctx.Done():
			}
		}
		w.err = watchEnd(op, wd, ctx.Err() != nil, st.Err())
	}()
	return w, nil
}

// watchEnd is why a watch stream ended: stalled when the watchdog ended it;
// nil when Close or the caller's context did (canceled), which is not a
// failure; else envd's or the connection's error, or that envd closed it.
func watchEnd(op string, wd *watchdog, canceled bool, err error) error {
	switch {
	case wd.fired():
		return stalled(op, wd.d)
	case canceled:
		return nil
	case err != nil:
		return rpcError(op, err)
	}
	return &Error{Op: op, Kind: ErrUnavailable, Message: "stream ended"}
}
