package httpapi

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Content encodings GET /files can send.
const (
	encIdentity = "identity"
	encGzip     = "gzip"
)

var errNoAcceptableEncoding = errors.New("no acceptable encoding found, supported: [gzip]")

type weightedEncoding struct {
	name string
	q    float64
}

// negotiateEncoding implements §7.6's Accept-Encoding rules. It returns the
// chosen encoding and whether the client refused identity, which matters when
// a Range or conditional request forces identity later.
func negotiateEncoding(header string) (enc string, identityRejected bool, err error) {
	entries := parseAcceptEncoding(header)
	if len(entries) == 0 {
		return encIdentity, false, nil
	}
	explicitIdentity, starZero := false, false
	for _, e := range entries {
		switch e.name {
		case encIdentity:
			if e.q == 0 {
				identityRejected = true
			} else {
				explicitIdentity = true
			}
		case "*":
			if e.q == 0 {
				starZero = true
			}
		}
	}
	if starZero && !explicitIdentity {
		identityRejected = true
	}
	slices.SortStableFunc(entries, func(a, b weightedEncoding) int {
		switch {
		case a.q > b.q:
			return -1
		case a.q < b.q:
			return 1
		}
		return 0
	})
	for _, e := range entries {
		if e.q == 0 {
			continue
		}
		switch e.name {
		case encIdentity:
			return encIdentity, identityRejected, nil
		case "*":
			if identityRejected {
				return encGzip, true, nil
			}
			return encIdentity, false, nil
		case encGzip:
			return encGzip, identityRejected, nil
		}
	}
	if identityRejected {
		return "", true, errNoAcceptableEncoding
	}
	return encIdentity, false, nil
}

// parseAcceptEncoding splits the header into lowercased codings with their
// q-values. A missing or unparseable q counts as 1; q is clamped to [0, 1].
func parseAcceptEncoding(header string) []weightedEncoding {
	var out []weightedEncoding
	for item := range strings.SplitSeq(header, ",") {
		name, params, _ := strings.Cut(item, ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		q := 1.0
		for p := range strings.SplitSeq(params, ";") {
			p = strings.TrimSpace(p)
			if len(p) < 2 || !strings.EqualFold(p[:2], "q=") {
				continue
			}
			if v, err := strconv.ParseFloat(strings.TrimSpace(p[2:]), 64); err == nil && !math.IsNaN(v) {
				q = min(max(v, 0), 1)
			}
			break
		}
		out = append(out, weightedEncoding{name, q})
	}
	return out
}
