package execenv

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrBadPath marks paths that cannot be resolved at all (e.g. ~other).
var ErrBadPath = errors.New("invalid path")

// Resolve turns a client path into an absolute one as §6.3 says:
// "" → workdir (or home when no workdir is set); "~" and "~/x" → under home;
// absolute paths unchanged; relative paths joined to home and cleaned.
// Symlinks are never followed here.
func Resolve(path, home, workdir string) (string, error) {
	if path == "" {
		if workdir != "" {
			return workdir, nil
		}
		return home, nil
	}
	if strings.HasPrefix(path, "~") {
		if path != "~" && !strings.HasPrefix(path, "~/") {
			return "", fmt.Errorf("%w: cannot expand user-specific home dir: %s", ErrBadPath, path)
		}
		return filepath.Join(home, path[1:]), nil
	}
	if filepath.IsAbs(path) {
		return path, nil
	}
	return filepath.Join(home, path), nil
}
