// Package atomicfile replaces files whole: a reader, or a process started
// after a crash, finds either the old content or the new one, never a mix.
package atomicfile

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Replace writes the new content of path through write into a temporary
// file beside it (path + ".tmp"), syncs it and renames it over path, then
// syncs the directory so that the rename survives a crash. On an error,
// path is left as it was and the temporary file is removed. It returns the
// bytes written.
func Replace(path string, perm os.FileMode, write func(w *bufio.Writer) error) (int64, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return 0, err
	}
	cw := &counter{f: f}
	w := bufio.NewWriterSize(cw, 64<<10)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("replace %s: %w", path, err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return cw.n, fmt.Errorf("replace %s: sync its directory: %w", path, err)
	}
	return cw.n, nil
}

type counter struct {
	f *os.File
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	c.n += int64(n)
	return n, err
}

// SyncDir makes a rename in dir durable. Windows cannot fsync a directory
// (NTFS journals the rename itself).
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
