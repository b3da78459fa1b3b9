package portwatch

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/envd-dev/envd/internal/portscan"
)

// Sizes of the kernel's sock_diag structures (linux/inet_diag.h), which
// x/sys does not define.
const (
	sizeofReq  = 56 // inet_diag_req_v2
	sizeofMsg  = 72 // inet_diag_msg
	tcpListen  = 10 // TCP_LISTEN
	diagBufLen = 64 << 10
)

// SockDiag lists the TCP listeners of the calling thread's network
// namespace through netlink sock_diag: the kernel filters by state and
// sends binary records, where the /proc scan formats and parses a text line
// per socket of every state. Same result as portscan.Scanner.All.
func SockDiag() ([]portscan.Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	var out []portscan.Listener
	buf := make([]byte, diagBufLen)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := sendDiagReq(fd, family); err != nil {
			return nil, err
		}
		ls, err := readDiag(fd, buf, family == unix.AF_INET6)
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

func sendDiagReq(fd int, family uint8) error {
	msg := make([]byte, unix.SizeofNlMsghdr+sizeofReq)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req := msg[unix.SizeofNlMsghdr:]
	req[0], req[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(req[4:], 1<<tcpListen)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	return nil
}

func readDiag(fd int, buf []byte, v6 bool) ([]portscan.Listener, error) {
	var out []portscan.Listener
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag read: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag parse: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return out, nil
			}
			if len(m.Data) < sizeofMsg {
				return nil, fmt.Errorf("sock_diag record of %d bytes", len(m.Data))
			}
			out = append(out, listenerOf(m.Data, v6))
		}
	}
}

// listenerOf decodes an inet_diag_msg: ports and addresses are big-endian,
// the inode native.
func listenerOf(d []byte, v6 bool) portscan.Listener {
	id := d[4:52]
	port := binary.BigEndian.Uint16(id[0:])
	var addr netip.Addr
	if d[0] == unix.AF_INET {
		addr = netip.AddrFrom4([4]byte(id[4:8]))
	} else {
		addr = netip.AddrFrom16([16]byte(id[4:20])).Unmap()
	}
	return portscan.Listener{Addr: addr, Port: port, Inode: uint64(binary.NativeEndian.Uint32(d[68:])), V6: v6}
}

// SockDiagOr scans through sock_diag, or through scan where netlink
// sock_diag is missing (a kernel without inet_diag).
func SockDiagOr(scan func() ([]portscan.Listener, error)) func() ([]portscan.Listener, error) {
	return func() ([]portscan.Listener, error) {
		ls, err := SockDiag()
		if err != nil {
			return scan()
		}
		return ls, nil
	}
}
