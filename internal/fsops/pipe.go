package fsops

import (
	"io"
)

const (
	pipeBuffers    = 4
	pipeBufferSize = 256 << 10
)

// pipeCopy copies src to dst with reading and writing overlapped: one
// goroutine fills buffers from src (network, decompression) while the caller
// writes the previous ones to disk. Sequentially, a gzip upload runs at the
// sum of both costs; overlapped, at the slower of the two. It returns only
// after the reading goroutine has stopped, so src is never touched after the
// caller returns. A write error stops reading after the read in progress.
// Errors of src come back marked ErrSource, those of dst as they are.
func pipeCopy(dst io.Writer, src io.Reader) (int64, error) {
	free := make(chan []byte, pipeBuffers)
	full := make(chan []byte, pipeBuffers) // as many slots as buffers: sending never blocks
	stop := make(chan struct{})
	for range pipeBuffers {
		free <- make([]byte, pipeBufferSize)
	}
	var readErr error
	go func() {
		defer close(full)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			n, err := fill(src, buf)
			if n > 0 {
				full <- buf[:n]
			}
			if err != nil {
				if err != io.EOF {
					readErr = err
				}
				return
			}
		}
	}()

	var (
		written  int64
		writeErr error
	)
	for buf := range full {
		if writeErr == nil {
			n, err := dst.Write(buf)
			written += int64(n)
			if err != nil {
				writeErr = err
				close(stop)
			}
		}
		free <- buf[:cap(buf)]
	}
	if writeErr != nil {
		return written, writeErr
	}
	if readErr != nil {
		return written, sourceError{readErr}
	}
	return written, nil
}

// fill reads until buf is full or src fails; io.EOF means a clean end.
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
