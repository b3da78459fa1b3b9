// Package fsmeta stores a file's user metadata as extended attributes named
// user.e2b.<key> (§7.7, §9.1). Uploads write it, Stat/ListDir/watch read it,
// and Move keeps it because rename(2) keeps xattrs. All calls follow symlinks.
package fsmeta

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Prefix is the xattr namespace envd owns.
const Prefix = "user.e2b."

// ErrUnsupported means the filesystem has no user xattrs (e.g. an old tmpfs).
var ErrUnsupported = errors.New("extended attributes not supported")

// Read returns every user.e2b.* attribute of path without the prefix.
// Keys or values that are not UTF-8 are skipped, since the wire carries
// strings. A filesystem without xattrs yields an empty map and no error.
func Read(path string) (map[string]string, error) {
	names, err := list(path)
	if err != nil {
		if isUnsupported(err) {
			return nil, nil
		}
		return nil, err
	}
	var out map[string]string
	for _, name := range names {
		key, ok := strings.CutPrefix(name, Prefix)
		if !ok || !utf8.ValidString(key) {
			continue
		}
		val, err := get(path, name)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue // removed between list and get
			}
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		if !utf8.Valid(val) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[key] = string(val)
	}
	return out, nil
}

// Replace makes path's user.e2b.* attributes exactly md: attributes not in md
// are removed, the rest set. ErrUnsupported when the filesystem has no xattrs.
func Replace(path string, md map[string]string) error {
	names, err := list(path)
	if err != nil {
		if isUnsupported(err) {
			return fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		return err
	}
	for _, name := range names {
		key, ok := strings.CutPrefix(name, Prefix)
		if !ok {
			continue
		}
		if _, keep := md[key]; keep {
			continue
		}
		if err := unix.Removexattr(path, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("remove xattr %s: %w", name, err)
		}
	}
	for k, v := range md {
		if err := unix.Setxattr(path, Prefix+k, []byte(v), 0); err != nil {
			if isUnsupported(err) {
				return fmt.Errorf("%w: %w", ErrUnsupported, err)
			}
			return fmt.Errorf("set xattr %s: %w", Prefix+k, err)
		}
	}
	return nil
}

// ListSizeAt returns the size of the xattr name list of name in the open
// directory dirfd, following symlinks: 0 means no attributes at all. It
// uses listxattrat(2), Linux 6.13 and later; older kernels give ENOSYS.
func ListSizeAt(dirfd int, name string) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), 0, 0, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, fmt.Errorf("list xattrs: %w", errno)
	}
}

func isUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// list returns every xattr name of path, growing the buffer if the set grows
// between the size query and the read.
func list(path string) ([]string, error) {
	for {
		n, err := unix.Listxattr(path, nil)
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = unix.Listxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

func get(path, name string) ([]byte, error) {
	for {
		n, err := unix.Getxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Getxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
