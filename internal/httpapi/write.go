package httpapi

import (
	"errors"
	"io"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"

	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsops"
)

// upload is one request's share of the storing: who owns what it creates,
// the metadata every file gets, and the announced size for the 507 message.
type upload struct {
	writer        *fsops.Writer
	user          *execenv.User
	metadata      map[string]string
	contentLength int64 // of the request; -1 if unknown
}

// write stores src at path. readContext prefixes body errors ("error reading
// form" for multipart parts); everything else is fsops' own wording.
func (up *upload) write(path string, src io.Reader, readContext string) error {
	_, err := up.writer.WriteFile(path, src, fsops.WriteOptions{
		UID: up.user.UID, GID: up.user.GID, Metadata: up.metadata, Size: up.contentLength,
	})
	if err != nil && errors.Is(err, fsops.ErrSource) {
		if isGzipError(err) {
			return fail(errBadRequest, "error decompressing request body: %w", err)
		}
		return fail(errBadRequest, "%s: %w", readContext, err)
	}
	return err
}

func isGzipError(err error) bool {
	var corrupt flate.CorruptInputError
	return errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt)
}
