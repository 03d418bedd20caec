// Package report holds what the benchmark harnesses' reports share: the
// description of the machine a run happened on, and writing a report file
// atomically. It imports nothing of the harnesses.
package report

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
)

// Env describes the machine a run happened on.
type Env struct {
	Date   time.Time // UTC
	CPUs   int
	Model  string // CPU model name
	Memory int64  // MemTotal in bytes
	Kernel string
	FS     string // filesystem of the run's data directory
}

// ProbeEnv describes this machine, with the filesystem dir is on. What it
// cannot read is "unknown".
func ProbeEnv(dir string) Env {
	e := Env{Date: time.Now().UTC(), CPUs: runtime.NumCPU(), Model: "unknown CPU", Kernel: "unknown", FS: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		e.Memory, _ = proc.ParseKB(b, "MemTotal")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		e.FS = FSName(int64(st.Type))
	}
	return e
}

// Machine is the machine line of a report: CPUs, memory, kernel and the
// data's filesystem.
func (e Env) Machine() string {
	return fmt.Sprintf("%d CPUs (%s), %.1f GiB RAM, Linux %s, data on %s",
		e.CPUs, e.Model, float64(e.Memory)/(1<<30), e.Kernel, e.FS)
}

// FSName names the common Linux filesystem magic numbers.
func FSName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlayfs"
	case 0x2FC12FC1:
		return "zfs"
	}
	return fmt.Sprintf("fs magic %#x", magic)
}

// WriteAtomic writes b to path through a temporary file and a rename, so
// that a reader sees the old report or the new one, never a part.
func WriteAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
