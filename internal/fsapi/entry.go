package fsapi

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

// wireString makes a file name fit a proto string field. Linux names are
// bytes; proto strings must be UTF-8, and one bad name would otherwise fail
// the marshalling of a whole listing or end a watch stream. Invalid bytes
// become U+FFFD, so the entry stays visible though its name is not exact.
func wireString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func entryInfo(e fsops.Entry) *filesystem.EntryInfo {
	out := &filesystem.EntryInfo{
		Name:        wireString(e.Name),
		Path:        wireString(e.Path),
		Size:        e.Size,
		Mode:        e.Mode,
		Permissions: e.Permissions,
		Owner:       wireString(e.Owner),
		Group:       wireString(e.Group),
		Metadata:    e.Metadata,
	}
	if e.SymlinkTarget != nil {
		t := wireString(*e.SymlinkTarget)
		out.SymlinkTarget = &t
	}
	switch e.Type {
	case fsops.TypeFile:
		out.Type = filesystem.FileType_FILE_TYPE_FILE
	case fsops.TypeDir:
		out.Type = filesystem.FileType_FILE_TYPE_DIRECTORY
	default:
		out.Type = filesystem.FileType_FILE_TYPE_UNSPECIFIED
	}
	if !e.ModTime.IsZero() {
		out.ModifiedTime = timestamppb.New(e.ModTime)
	}
	return out
}
