package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

const (
	metadataHeaderPrefix = "X-Metadata-"
	// An xattr name is at most 255 bytes, and "user.e2b." takes 9 of them.
	maxMetadataKey = 255 - 9
	// Σ(9 + len(key) + len(value)) over all entries, as §7.7 counts it.
	maxMetadataTotal = 4096
)

// metadataFromHeaders collects X-Metadata-<key> headers: the key is the
// canonical header name without the prefix, lowercased; only the first value
// counts; an empty key is ignored. nil when there are none.
func metadataFromHeaders(h http.Header) (map[string]string, error) {
	var md map[string]string
	for name, values := range h {
		canon := http.CanonicalHeaderKey(name)
		if len(canon) < len(metadataHeaderPrefix) || !strings.EqualFold(canon[:len(metadataHeaderPrefix)], metadataHeaderPrefix) {
			continue
		}
		key := strings.ToLower(canon[len(metadataHeaderPrefix):])
		if key == "" || len(values) == 0 {
			continue
		}
		if md == nil {
			md = map[string]string{}
		}
		md[key] = values[0]
	}
	if err := validateMetadata(md); err != nil {
		return nil, err
	}
	return md, nil
}

var errMetadataTooLarge = errors.New("metadata exceeds 4096 bytes")

func validateMetadata(md map[string]string) error {
	total := 0
	for k, v := range md {
		switch {
		case len(k) == 0:
			return errors.New("empty key")
		case len(k) > maxMetadataKey:
			return fmt.Errorf("key %q is longer than %d bytes", k, maxMetadataKey)
		case !printableASCII(k):
			return fmt.Errorf("key %q has characters outside printable ASCII", k)
		case !printableASCII(v):
			return fmt.Errorf("value of key %q has characters outside printable ASCII", k)
		}
		total += 9 + len(k) + len(v)
	}
	if total > maxMetadataTotal {
		return errMetadataTooLarge
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
