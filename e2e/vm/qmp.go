package vm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of qemu's machine protocol on a unix socket: one command at
// a time, events collected on the side. It is all the VMM API the checks need
// (send-key for Ctrl-Alt-Del, stop, migrate, cont, hostfwd_add, quit), as
// Firecracker's API is for a host agent.
type QMP struct {
	conn net.Conn
	mu   sync.Mutex // one command in flight
	rd   *bufio.Reader

	evMu   sync.Mutex
	events []Event
}

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// DialQMP connects to path, retrying until qemu has created it or timeout
// passes, and leaves capabilities negotiation done.
func DialQMP(path string, timeout time.Duration) (*QMP, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		conn, err = net.Dial("unix", path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to QMP %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	q := &QMP{conn: conn, rd: bufio.NewReader(conn)}
	// The greeting, then capabilities negotiation.
	if _, err := q.rd.ReadBytes('\n'); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read QMP greeting: %w", err)
	}
	if _, err := q.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	_ = q.conn.SetDeadline(time.Now().Add(60 * time.Second))
	defer q.conn.SetDeadline(time.Time{})
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("QMP %s: %w", cmd, err)
		}
		var r qmpReply
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("QMP %s: decode %q: %w", cmd, line, err)
		}
		switch {
		case r.Event != "":
			q.evMu.Lock()
			q.events = append(q.events, Event{Name: r.Event, Data: r.Data})
			q.evMu.Unlock()
		case r.Error != nil:
			return nil, fmt.Errorf("QMP %s: %s: %s", cmd, r.Error.Class, r.Error.Desc)
		default:
			return r.Return, nil
		}
	}
}

// HMP runs a human monitor command (hostfwd_add has no QMP form in 7.2) and
// returns what it printed, which is how HMP reports errors.
func (q *QMP) HMP(line string) (string, error) {
	out, err := q.Execute("human-monitor-command", map[string]any{"command-line": line})
	if err != nil {
		return "", err
	}
	var s string
	err = json.Unmarshal(out, &s)
	return s, err
}

// Status is the run state of the VM (running, paused, inmigrate, postmigrate, …).
func (q *QMP) Status() (string, error) {
	out, err := q.Execute("query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// CtrlAltDel presses Ctrl-Alt-Del on the guest's keyboard, as Firecracker's
// SendCtrlAltDel action does through its i8042.
func (q *QMP) CtrlAltDel() error {
	keys := []map[string]string{{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}
	_, err := q.Execute("send-key", map[string]any{"keys": keys})
	return err
}

// Events returns the events seen so far.
func (q *QMP) Events() []Event {
	q.evMu.Lock()
	defer q.evMu.Unlock()
	return append([]Event(nil), q.events...)
}

// Close drops the connection.
func (q *QMP) Close() error {
	if q == nil {
		return nil
	}
	return q.conn.Close()
}
