package upgrade

import (
	"fmt"
	"io"
	"os"
)

// Stage writes the delivered binary to path, mode 0755. The old file is
// unlinked first, so a running envd executing from path (the previous
// upgrade's image) keeps its text and the open does not fail with ETXTBSY.
// No checksum or ELF check, as in E2B's envd: a bad image fails at execve,
// which leaves the old envd serving.
func Stage(path string, body io.Reader) error {
	// Errors ignored, as in E2B's envd: the open below reports what matters.
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("stage upgrade binary: %w", err)
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return fmt.Errorf("stage upgrade binary: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("stage upgrade binary: %w", err)
	}
	// The umask may have narrowed the mode.
	if err := os.Chmod(path, 0o755); err != nil {
		return fmt.Errorf("stage upgrade binary: %w", err)
	}
	return nil
}
