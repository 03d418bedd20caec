//go:build !linux

package mesh

import "os"

// openDirect returns nil: direct writes are used on Linux only.
func openDirect(string) *os.File { return nil }

// openDirectReader returns nil: direct reads are used on Linux only.
func openDirectReader(string) *os.File { return nil }
