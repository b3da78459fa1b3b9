package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"time"
)

// The 401 messages of §6.4, verbatim: SDK tests compare the whole body.
var (
	ErrHeaderTokenMismatch = errors.New("access token present in header but does not match")
	ErrMissingSignature    = errors.New("missing signature query parameter")
	ErrInvalidSignature    = errors.New("invalid signature")
	ErrSignatureExpired    = errors.New("signature is already expired")
)

// Operations signed for GET and POST /files.
const (
	OpRead  = "read"
	OpWrite = "write"
)

// Signature computes the v1 signature of §6.4: "v1_" and the unpadded standard
// base64 of SHA-256 over path:operation:username:token[:expiration]. path and
// username are the raw query values ("" when absent), never resolved ones,
// because the signer only knows what it put in the URL.
func Signature(path, operation, username, token string, expiration *int64) string {
	msg := path + ":" + operation + ":" + username + ":" + token
	if expiration != nil {
		msg += ":" + strconv.FormatInt(*expiration, 10)
	}
	sum := sha256.Sum256([]byte(msg))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// FilesRequest is what §6.4 looks at in a /files request.
type FilesRequest struct {
	HeaderToken string // X-Access-Token
	Path        string // raw `path` query value
	Username    string // raw `username` query value
	Signature   string // `signature` query value
	Expiration  *int64 // `signature_expiration`, nil when absent
	Operation   string // OpRead or OpWrite
}

// CheckFiles decides whether a /files request may proceed: open while no token
// is set; otherwise a matching X-Access-Token header, or else a valid,
// unexpired signature. The returned errors are the §6.4 401 messages.
func (t *Token) CheckFiles(req FilesRequest, now time.Time) error {
	token, set := t.Get()
	if !set {
		return nil
	}
	if req.HeaderToken != "" {
		if subtle.ConstantTimeCompare([]byte(token), []byte(req.HeaderToken)) != 1 {
			return ErrHeaderTokenMismatch
		}
		return nil
	}
	if req.Signature == "" {
		return ErrMissingSignature
	}
	want := Signature(req.Path, req.Operation, req.Username, token, req.Expiration)
	if subtle.ConstantTimeCompare([]byte(want), []byte(req.Signature)) != 1 {
		return ErrInvalidSignature
	}
	if req.Expiration != nil && *req.Expiration < now.Unix() {
		return ErrSignatureExpired
	}
	return nil
}
