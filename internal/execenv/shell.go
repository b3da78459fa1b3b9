package execenv

import (
	"bufio"
	"os"
	"strings"
)

// shellOf reads the login shell from /etc/passwd; os/user does not expose it.
// A missing entry (e.g. users from NSS only) falls back to /bin/sh.
func shellOf(name string) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/bin/sh"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 7 && fields[0] == name && fields[6] != "" {
			return fields[6]
		}
	}
	return "/bin/sh"
}
