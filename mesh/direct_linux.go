package mesh

import (
	"os"
	"syscall"
)

// openDirect opens path write-only with O_DIRECT, or returns nil if that
// fails (tmpfs before Linux 6.6, some overlay and network filesystems).
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

// openDirectReader opens path read-only with O_DIRECT, or returns nil.
func openDirectReader(path string) *os.File {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}
