package proc

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// prefaultChunk is the size of one anonymous mapping touched by Prefault.
const prefaultChunk = 256 << 20

// Prefault maps about size bytes of anonymous memory, writes one byte to
// every page, then unmaps all of it, and returns how long that took.
//
// Why: on a VM whose memory the host backs lazily (the firecracker machines
// this project runs on), the first use of a guest page costs a fault on the
// host. Writing a file into never-used page cache then runs at ~230 MB/s
// instead of ~2 GB/s, so a push would measure the host rather than the
// registry, and whichever registry happened to get fresh pages would lose.
// Pages that were touched once and freed are reused by the guest kernel
// for the page cache that the registries fill next. All of it stays mapped
// until the end, so that size bytes of distinct pages are touched.
func Prefault(ctx context.Context, size int64) (time.Duration, error) {
	start := time.Now()
	var regions [][]byte
	defer func() {
		for _, b := range regions {
			_ = syscall.Munmap(b)
		}
	}()
	page := int64(os.Getpagesize())
	for done := int64(0); done < size; {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("prefault: %w", err)
		}
		n := min(prefaultChunk, (size-done+page-1)/page*page)
		b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			return 0, fmt.Errorf("prefault: mmap after %d MiB: %w", done>>20, err)
		}
		regions = append(regions, b)
		for i := 0; i < len(b); i += int(page) {
			b[i] = 1
		}
		done += n
	}
	return time.Since(start), nil
}

// PrefaultSize is how much memory to prefault for a run that writes
// writes bytes: that with a margin, but leaving 2 GiB of the available
// memory alone.
func PrefaultSize(writes, available int64) int64 {
	want := writes + writes/4 + 1<<30
	return max(0, min(want, available-2<<30))
}
