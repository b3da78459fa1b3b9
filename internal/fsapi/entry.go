package fsapi

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/envd-dev/envd/internal/fsops"
	"github.com/envd-dev/envd/internal/gen/filesystem"
)

func entryInfo(e fsops.Entry) *filesystem.EntryInfo {
	out := &filesystem.EntryInfo{
		Name:          e.Name,
		Path:          e.Path,
		Size:          e.Size,
		Mode:          e.Mode,
		Permissions:   e.Permissions,
		Owner:         e.Owner,
		Group:         e.Group,
		SymlinkTarget: e.SymlinkTarget,
		Metadata:      e.Metadata,
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
