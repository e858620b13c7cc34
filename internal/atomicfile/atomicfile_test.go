package atomicfile

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReplace: the new content replaces the old whole, with its size; a
// write that fails leaves the old content and no temporary file.
func TestReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.jsonl")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Replace(path, 0o600, func(w *bufio.Writer) error {
		_, err := w.WriteString("new content\n")
		return err
	})
	if b, _ := os.ReadFile(path); err != nil || string(b) != "new content\n" || n != 12 {
		t.Fatalf("replaced: %q, %d bytes, %v", b, n, err)
	}
	boom := errors.New("boom")
	_, err = Replace(path, 0o600, func(w *bufio.Writer) error {
		w.WriteString("half of it")
		w.Flush()
		return boom
	})
	if b, _ := os.ReadFile(path); !errors.Is(err, boom) || string(b) != "new content\n" {
		t.Fatalf("after a failed write: %q, %v", b, err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left: %v", err)
	}
}
