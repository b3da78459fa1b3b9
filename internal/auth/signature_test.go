package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func ptr(v int64) *int64 { return &v }

// Expected values computed independently (Python hashlib + base64, '='
// stripped) from the §6.4 formula.
func TestSignatureVectors(t *testing.T) {
	if got := Signature("/home/user/f.txt", OpRead, "user", "tok123", ptr(1700000000)); got != "v1_YXSYBIh24Y21G9k1zi94vKwpQiFROF68xA9ZMMPUH5Q" {
		t.Errorf("with expiration: %s", got)
	}
	if got := Signature("a.txt", OpWrite, "", "tok", nil); got != "v1_/GA+OwObMH6etEE0CJuj8oBdczYFCpvdP4xFwJ/WIH8" {
		t.Errorf("without expiration: %s", got)
	}
}

func TestCheckFiles(t *testing.T) {
	now := time.Unix(1800000000, 0)
	var open Token
	if err := open.CheckFiles(FilesRequest{Operation: OpRead}, now); err != nil {
		t.Fatalf("no token set must allow everything: %v", err)
	}
	tok := &Token{}
	tok.Set("secret")
	future, past := now.Unix()+60, now.Unix()-1
	good := FilesRequest{Path: "/x", Username: "user", Operation: OpRead, Expiration: &future}
	good.Signature = Signature("/x", OpRead, "user", "secret", &future)

	for _, c := range []struct {
		name string
		mod  func(*FilesRequest)
		want error
	}{
		{"valid", func(*FilesRequest) {}, nil},
		{"header token right, no signature", func(r *FilesRequest) { r.HeaderToken, r.Signature = "secret", "" }, nil},
		{"header token wrong beats good signature", func(r *FilesRequest) { r.HeaderToken = "nope" }, ErrHeaderTokenMismatch},
		{"missing signature", func(r *FilesRequest) { r.Signature = "" }, ErrMissingSignature},
		{"path tampered", func(r *FilesRequest) { r.Path = "/y" }, ErrInvalidSignature},
		{"user tampered", func(r *FilesRequest) { r.Username = "root" }, ErrInvalidSignature},
		{"operation differs", func(r *FilesRequest) { r.Operation = OpWrite }, ErrInvalidSignature},
		{"expiration dropped", func(r *FilesRequest) { r.Expiration = nil }, ErrInvalidSignature},
		{"expiration extended", func(r *FilesRequest) { e := future + 1; r.Expiration = &e }, ErrInvalidSignature},
		{"expired", func(r *FilesRequest) {
			r.Expiration = &past
			r.Signature = Signature("/x", OpRead, "user", "secret", &past)
		}, ErrSignatureExpired},
		{"expires this second is still valid", func(r *FilesRequest) {
			e := now.Unix()
			r.Expiration = &e
			r.Signature = Signature("/x", OpRead, "user", "secret", &e)
		}, nil},
		{"padded base64 is not the same signature", func(r *FilesRequest) { r.Signature += "=" }, ErrInvalidSignature},
	} {
		r := good
		c.mod(&r)
		if err := tok.CheckFiles(r, now); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// FuzzSignature checks that only the exact signature of the exact fields is
// accepted, and that checking never panics.
func FuzzSignature(f *testing.F) {
	f.Add("/home/user/a.txt", "user", "tok", int64(100), "v1_abc", true)
	f.Add("", "", "t", int64(-1), "", false)
	f.Fuzz(func(t *testing.T, path, user, token string, exp int64, sig string, withExp bool) {
		if token == "" {
			return
		}
		tok := &Token{}
		tok.Set(token)
		var e *int64
		if withExp {
			e = &exp
		}
		now := time.Unix(0, 0)
		right := Signature(path, OpWrite, user, token, e)
		if !strings.HasPrefix(right, "v1_") || strings.Contains(right, "=") {
			t.Fatalf("malformed signature %q", right)
		}
		err := tok.CheckFiles(FilesRequest{Path: path, Username: user, Signature: right, Expiration: e, Operation: OpWrite}, now)
		if withExp && exp < 0 {
			if !errors.Is(err, ErrSignatureExpired) {
				t.Fatalf("expired signature: %v", err)
			}
		} else if err != nil {
			t.Fatalf("right signature rejected: %v", err)
		}
		err = tok.CheckFiles(FilesRequest{Path: path, Username: user, Signature: sig, Expiration: e, Operation: OpWrite}, now)
		if sig != right && err == nil {
			t.Fatalf("signature %q accepted, want %q", sig, right)
		}
	})
}
