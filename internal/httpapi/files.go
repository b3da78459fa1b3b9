package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envd-dev/envd/internal/auth"
	"github.com/envd-dev/envd/internal/execenv"
	"github.com/envd-dev/envd/internal/fsmeta"
	"github.com/envd-dev/envd/internal/fsops"
)

// Files serves GET and POST /files (§7.6, §7.7). Both run as root; the user
// only decides path resolution and the owner of what gets created.
type Files struct {
	Env   *execenv.Env
	Token *auth.Token
	Now   func() time.Time
	Log   *slog.Logger
	// Writer stores uploads; the filesystem watchers share it to recognise
	// its temporary files.
	Writer *fsops.Writer
}

// Download returns the GET /files handler.
func (f *Files) Download() http.Handler { return handler{f.download, f.Log} }

// Upload returns the POST /files handler.
func (f *Files) Upload() http.Handler { return handler{f.upload, f.Log} }

// filesRequest is the query of a /files request once signing has passed.
type filesRequest struct {
	path     string
	hasPath  bool
	username string
}

// authorize runs §6.4 and resolves the username (query or default user).
func (f *Files) authorize(r *http.Request, op string) (filesRequest, error) {
	q := r.URL.Query()
	var exp *int64
	if q.Has("signature_expiration") {
		v, err := strconv.ParseInt(q.Get("signature_expiration"), 10, 64)
		if err != nil {
			return filesRequest{}, &fault{msg: "Invalid format for parameter signature_expiration: " + err.Error(), kind: errBadRequest, body: plainBody}
		}
		exp = &v
	}
	err := f.Token.CheckFiles(auth.FilesRequest{
		HeaderToken: r.Header.Get("X-Access-Token"),
		Path:        q.Get("path"),
		Username:    q.Get("username"),
		Signature:   q.Get("signature"),
		Expiration:  exp,
		Operation:   op,
	}, f.Now())
	if err != nil {
		return filesRequest{}, &fault{msg: err.Error(), kind: errUnauthorized, err: err}
	}
	req := filesRequest{path: q.Get("path"), hasPath: q.Has("path"), username: q.Get("username")}
	if !q.Has("username") {
		req.username = f.Env.Snapshot().User
	}
	if req.username == "" {
		return filesRequest{}, fail(errBadRequest, "username not provided")
	}
	return req, nil
}

func (f *Files) lookupUser(name string) (*execenv.User, error) {
	u, err := f.Env.LookupUser(name)
	if err != nil {
		// Report the os/user message itself, as the existing envds do.
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			err = unknown
		}
		return nil, fail(errUnauthorized, "error looking up user '%s': %v", name, err)
	}
	return u, nil
}

// resolvePath applies §6.3 for u, and refuses paths no system call could
// take (NUL bytes, over-long names) with a 400 instead of a 500 later.
func (f *Files) resolvePath(p string, u *execenv.User) (string, error) {
	resolved, err := execenv.Resolve(p, u.Home, f.Env.Snapshot().Workdir)
	if err == nil {
		err = fsops.ValidatePath(resolved)
	}
	if err != nil {
		return "", fail(errBadRequest, "error expanding and resolving path '%s': %w", p, err)
	}
	return resolved, nil
}

// resolveTarget is resolvePath for an upload, cleaned: "dir/sub/../f.txt"
// is stored at, reported as and compared with other parts as "dir/f.txt",
// and no "sub" is created on the way.
func (f *Files) resolveTarget(p string, u *execenv.User) (string, error) {
	resolved, err := f.resolvePath(p, u)
	if err != nil {
		return "", err
	}
	return filepath.Clean(resolved), nil
}

func (f *Files) download(w http.ResponseWriter, r *http.Request) error {
	req, err := f.authorize(r, auth.OpRead)
	if err != nil {
		return err
	}
	u, err := f.lookupUser(req.username)
	if err != nil {
		return err
	}
	path, err := f.resolvePath(req.path, u)
	if err != nil {
		return err
	}
	if err := checkDownloadable(path); err != nil {
		return err
	}
	enc, err := downloadEncoding(w, r)
	if err != nil {
		return err
	}
	file, st, err := openRegular(path)
	if err != nil {
		return err
	}
	defer file.Close()
	if cd := mime.FormatMediaType("inline", map[string]string{"filename": filepath.Base(path)}); cd != "" {
		w.Header().Set("Content-Disposition", cd)
	}
	if enc == encIdentity {
		http.ServeContent(w, r, req.path, st.ModTime(), file)
		return nil
	}
	f.serveGzip(w, req.path, file)
	return nil
}

// checkDownloadable answers what stat (following symlinks) says of path
// before anything about encodings is looked at.
func checkDownloadable(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return because(err, errNotFound, "path '%s' does not exist", path)
	case err != nil:
		return fail(nil, "error checking if path exists '%s': %w", path, err)
	case st.IsDir():
		return fail(fsops.ErrIsDir, "path '%s' is a directory", path)
	case !st.Mode().IsRegular():
		return fail(fsops.ErrNotRegular, "path '%s' is not a regular file", path)
	}
	return nil
}

// downloadEncoding picks identity or gzip; Range and conditional requests
// are served as identity, since their byte positions are those of the file.
func downloadEncoding(w http.ResponseWriter, r *http.Request) (string, error) {
	enc, identityRejected, err := negotiateEncoding(strings.Join(r.Header.Values("Accept-Encoding"), ","))
	if err != nil {
		return "", fail(errNotAcceptable, "error parsing Accept-Encoding: %w", err)
	}
	w.Header().Add("Vary", "Accept-Encoding")
	if hasRangeOrConditional(r.Header) {
		if identityRejected {
			return "", fail(errNotAcceptable, "identity encoding not acceptable for Range or conditional request")
		}
		enc = encIdentity
	}
	return enc, nil
}

// openRegular opens path for reading and checks, on the open file, that it
// is still a regular file.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	// O_NONBLOCK: if the path became a FIFO since the stat, open must not
	// wait for a writer. It changes nothing for regular files.
	file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fail(nil, "error opening file '%s': %w", path, err)
	}
	st, err := file.Stat()
	switch {
	case err != nil:
		err = fail(nil, "error opening file '%s': %w", path, err)
	case !st.Mode().IsRegular():
		err = fail(fsops.ErrNotRegular, "path '%s' is not a regular file", path)
	}
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	return file, st, nil
}

// serveGzip streams file compressed; the Content-Type is that of the name
// the client asked for.
func (f *Files) serveGzip(w http.ResponseWriter, name string, file *os.File) {
	ct := mime.TypeByExtension(filepath.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Encoding", encGzip)
	w.WriteHeader(http.StatusOK)
	if err := copyGzip(w, file); err != nil {
		// The status is sent; cutting the connection is the only way to tell
		// the client its body is incomplete.
		f.Log.Debug("gzip download aborted", "path", file.Name(), "err", err)
		panic(http.ErrAbortHandler)
	}
}

// copyGzip compresses at BestSpeed: loopback and VM networks are fast enough
// that a higher level would make compression the bottleneck.
func copyGzip(w io.Writer, src io.Reader) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	gz, _ := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(gz, src, buf); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

func hasRangeOrConditional(h http.Header) bool {
	for _, k := range []string{"Range", "If-Modified-Since", "If-None-Match", "If-Range"} {
		if h.Get(k) != "" {
			return true
		}
	}
	return false
}

// uploadEntry is one element of the POST /files response; clients compare it
// with deep equality, so it has exactly these keys.
type uploadEntry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// multipartReadSize is the read size of a multipart upload's body.
const multipartReadSize = 256 << 10

func (f *Files) upload(w http.ResponseWriter, r *http.Request) error {
	req, err := f.authorize(r, auth.OpWrite)
	if err != nil {
		return err
	}
	body, err := decodedBody(r)
	if err != nil {
		return err
	}
	defer body.Close()
	u, err := f.lookupUser(req.username)
	if err != nil {
		return err
	}
	md, err := metadataFromHeaders(r.Header)
	if err != nil {
		return fail(errBadRequest, "invalid metadata: %w", err)
	}
	ct := r.Header.Get("Content-Type")
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return fail(errBadRequest, "unsupported content type: %s, expected multipart/form-data or application/octet-stream", ct)
	}
	up := &upload{writer: f.Writer, user: u, metadata: md, contentLength: r.ContentLength}

	var entries []uploadEntry
	switch {
	case mediaType == "application/octet-stream":
		if !req.hasPath {
			return fail(errBadRequest, "path query parameter is required for raw body upload")
		}
		path, err := f.resolveTarget(req.path, u)
		if err != nil {
			return err
		}
		if err := up.write(path, body, "error reading request body"); err != nil {
			return err
		}
		entries = append(entries, resultEntry(path))
	case strings.HasPrefix(mediaType, "multipart/"):
		boundary := params["boundary"]
		if boundary == "" {
			return fail(errBadRequest, "error parsing multipart form: no multipart boundary param in Content-Type")
		}
		// multipart reads through a 4 KiB buffer of its own: without one
		// of ours below it, every 4 KiB of an upload is a socket read.
		entries, err = f.uploadParts(multipart.NewReader(bufio.NewReaderSize(body, multipartReadSize), boundary), req, up)
		if err != nil {
			return err
		}
	default:
		return fail(errBadRequest, "unsupported content type: %s, expected multipart/form-data or application/octet-stream", ct)
	}

	if entries == nil {
		entries = []uploadEntry{}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(entries)
}

// uploadParts writes every part named "file", in order. A failing part
// stops the request; the files before it stay written.
func (f *Files) uploadParts(mr *multipart.Reader, req filesRequest, up *upload) ([]uploadEntry, error) {
	var (
		entries []uploadEntry
		written []string
	)
	for {
		part, err := mr.NextPart()
		// Only a bare io.EOF is the end boundary; a wrapped one is a body
		// that ended without it.
		if err == io.EOF { //nolint:errorlint
			return entries, nil
		}
		if err != nil {
			return nil, fail(errBadRequest, "error reading form: %w", err)
		}
		if part.FormName() != "file" {
			continue // NextPart discards the rest of it
		}
		target := req.path
		if !req.hasPath {
			if target, err = partFileName(part.Header.Get("Content-Disposition")); err != nil {
				return nil, fail(errBadRequest, "error getting multipart custom part file name: %w", err)
			}
		}
		path, err := f.resolveTarget(target, up.user)
		if err != nil {
			return nil, err
		}
		if slices.Contains(written, path) {
			msg := fmt.Sprintf("you cannot upload multiple files to the same path '%s' in one upload request, only the first specified file was uploaded", path)
			if len(written) > 1 {
				msg += ", also the following files were uploaded: " + strings.Join(written, ", ")
			}
			return nil, &fault{msg: msg, kind: errBadRequest}
		}
		if err := up.write(path, part, "error reading form"); err != nil {
			return nil, err
		}
		written = append(written, path)
		entries = append(entries, resultEntry(path))
	}
}

var errNoFileName = errors.New("filename not found in Content-Disposition header")

// partFileName returns the part's filename parameter verbatim. Part.FileName
// is not used because it strips directories, and SDKs put the target path
// there.
func partFileName(disposition string) (string, error) {
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return "", fmt.Errorf("parse Content-Disposition: %w", err)
	}
	name, ok := params["filename"]
	if !ok || name == "" {
		return "", errNoFileName
	}
	return name, nil
}

// resultEntry reads the metadata back from disk so the response shows what
// was really stored.
func resultEntry(path string) uploadEntry {
	md, _ := fsmeta.Read(path)
	return uploadEntry{Path: path, Name: filepath.Base(path), Type: "file", Metadata: md}
}

// decodedBody applies the request's Content-Encoding to the whole body,
// multipart envelope included.
func decodedBody(r *http.Request) (io.ReadCloser, error) {
	ce := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch ce {
	case "", encIdentity:
		return r.Body, nil
	case encGzip:
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, fail(errBadRequest, "error decompressing request body: %w", err)
		}
		return gz, nil
	}
	return nil, fail(errBadRequest, "error decompressing request body: unsupported Content-Encoding: %s, supported: [gzip]", r.Header.Get("Content-Encoding"))
}
