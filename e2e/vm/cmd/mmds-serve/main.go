// Command mmds-serve serves Firecracker's MMDS v2 on a host loopback port, as
// strictly as Firecracker does (internal/mmds/mmdstest), for a qemu guest whose
// 169.254.169.254:80 is forwarded to it (qemu guestfwd with socat). vm-up and
// vm-test run the same server in-process.
//
//	mmds-serve [-port P] '{"instanceID":"i-1","envID":"e-1","accessTokenHash":"…"}'
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/envd-dev/envd/internal/mmds/mmdstest"
)

func main() {
	port := flag.Int("port", 0, "loopback port (default: a free one)")
	flag.Parse()
	data := map[string]any{}
	if flag.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "usage: mmds-serve [-port P] [METADATA-JSON]")
		os.Exit(2)
	}
	if flag.NArg() == 1 {
		if err := json.Unmarshal([]byte(flag.Arg(0)), &data); err != nil {
			fmt.Fprintln(os.Stderr, "mmds-serve: metadata:", err)
			os.Exit(2)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "mmds-serve:", err)
		os.Exit(1)
	}
	fmt.Printf("MMDS v2 at http://%s\n", ln.Addr())
	srv := &http.Server{Handler: mmdstest.NewHandler(data), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, "mmds-serve:", srv.Serve(ln))
	os.Exit(1)
}
