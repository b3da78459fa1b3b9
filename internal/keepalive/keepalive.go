// Package keepalive reads the client's wish for keepalive events on server
// streams (§8.1 item 11), shared by the process and watch streams so both
// honour the header the same way.
package keepalive

import (
	"net/http"
	"strconv"
	"time"
)

// Header is what the SDKs send on Start, Connect and WatchDir (value 50).
const Header = "Keepalive-Ping-Interval"

// Default applies when the header is missing or not a positive integer.
const Default = 90 * time.Second

// Interval returns the keepalive period the request asks for, in whole seconds.
func Interval(h http.Header) time.Duration {
	n, err := strconv.Atoi(h.Get(Header))
	if err != nil || n <= 0 {
		return Default
	}
	return time.Duration(n) * time.Second
}
