package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/schollz/progressbar/v3"

	"github.com/envd-dev/envd/client"
)

func (a *app) cmdCp(ctx context.Context, args []string) error {
	fl := newFlags("cp")
	recursive := fl.Bool("r", false, "copy directories recursively")
	gz := fl.Bool("gzip", false, "compress on the wire")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 2 {
		return usagef("want SRC DST, one of them :REMOTE")
	}
	src, dst := fl.Arg(0), fl.Arg(1)
	rsrc, srcRemote := strings.CutPrefix(src, ":")
	rdst, dstRemote := strings.CutPrefix(dst, ":")
	var opts []client.FileOption
	if *gz {
		opts = append(opts, client.Gzip())
	}
	switch {
	case srcRemote == dstRemote:
		return usagef("exactly one of SRC and DST must be :REMOTE")
	case dstRemote:
		return a.upload(ctx, src, rdst, *recursive, opts)
	default:
		return a.download(ctx, rsrc, dst, *recursive, opts)
	}
}

// remoteDir reports whether the remote path is an existing directory.
func (a *app) remoteDir(ctx context.Context, p string) (bool, error) {
	e, err := a.c.Stat(ctx, p)
	if errors.Is(err, client.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return e.Type == client.TypeDir, nil
}

func (a *app) upload(ctx context.Context, src, dst string, recursive bool, opts []client.FileOption) error {
	if src == "-" {
		_, err := a.c.Upload(ctx, dst, a.stdin, opts...)
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	isDir, err := a.remoteDir(ctx, dst)
	if err != nil {
		return err
	}
	if isDir || strings.HasSuffix(dst, "/") {
		dst = path.Join(dst, filepath.Base(src))
	}
	if !st.IsDir() {
		return a.uploadFile(ctx, src, dst, st.Size(), opts)
	}
	if !recursive {
		return fmt.Errorf("%s is a directory (use -r)", src)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			if _, err := a.c.MakeDir(ctx, target); err != nil && !errors.Is(err, client.ErrAlreadyExists) {
				return err
			}
			return nil
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return a.uploadFile(ctx, p, target, info.Size(), opts)
		default:
			fmt.Fprintf(a.stderr, "envdctl cp: skipping %s: not a regular file\n", p)
			return nil
		}
	})
}

func (a *app) uploadFile(ctx context.Context, src, dst string, size int64, opts []client.FileOption) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	bar := a.bar(size, filepath.Base(src))
	opts = append(opts, client.Length(size))
	if bar != nil {
		opts = append(opts, client.OnProgress(func(done, _ int64) { bar.Set64(done) }))
	}
	_, err = a.c.Upload(ctx, dst, f, opts...)
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(a.stderr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	return nil
}

func (a *app) download(ctx context.Context, src, dst string, recursive bool, opts []client.FileOption) error {
	if dst == "-" {
		_, err := a.c.Download(ctx, src, a.stdout, opts...)
		return err
	}
	e, err := a.c.Stat(ctx, src)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if st, err := os.Stat(dst); err == nil && st.IsDir() || strings.HasSuffix(dst, "/") {
		dst = filepath.Join(dst, path.Base(src))
	}
	if e.Type != client.TypeDir {
		return a.downloadFile(ctx, src, dst, e.Size, opts)
	}
	if !recursive {
		return fmt.Errorf("%s is a directory (use -r)", src)
	}
	// The whole tree in one listing: envd walks it depth-first, parents
	// before children.
	entries, err := a.c.ListDir(ctx, src, 1<<16)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	base := strings.TrimSuffix(src, "/") + "/"
	for _, e := range entries {
		rel, ok := strings.CutPrefix(e.Path, base)
		if !ok {
			return fmt.Errorf("envd listed %s outside %s", e.Path, src)
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch e.Type {
		case client.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case client.TypeFile:
			if err := a.downloadFile(ctx, e.Path, target, e.Size, opts); err != nil {
				return err
			}
		default:
			fmt.Fprintf(a.stderr, "envdctl cp: skipping %s: not a regular file\n", e.Path)
		}
	}
	return nil
}

func (a *app) downloadFile(ctx context.Context, src, dst string, size int64, opts []client.FileOption) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	bar := a.bar(size, path.Base(src))
	if bar != nil {
		opts = append(opts, client.OnProgress(func(done, _ int64) { bar.Set64(done) }))
	}
	_, err = a.c.Download(ctx, src, f, opts...)
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(a.stderr)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst) // no half file left behind
		return fmt.Errorf("%s: %w", src, err)
	}
	return nil
}

// bar is a progress bar on stderr (bytes, rate, ETA) when stderr is a
// terminal, else nil.
func (a *app) bar(size int64, name string) *progressbar.ProgressBar {
	if !isTerminalWriter(a.stderr) {
		return nil
	}
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetDescription(name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionFullWidth(),
		progressbar.OptionThrottle(100e6),
	)
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
