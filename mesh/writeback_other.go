//go:build !linux

package mesh

import "os"

// startWriteback is a no-op where sync_file_range does not exist; the fsync
// at commit still makes the blob durable.
func startWriteback(*os.File) {}
