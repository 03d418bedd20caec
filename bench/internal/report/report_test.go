package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProbeEnv(t *testing.T) {
	e := ProbeEnv(t.TempDir())
	if e.CPUs < 1 || e.Memory <= 0 || e.Kernel == "unknown" || e.FS == "unknown" {
		t.Errorf("env = %+v", e)
	}
	if m := e.Machine(); !strings.Contains(m, " CPUs (") || !strings.Contains(m, "Linux "+e.Kernel+", data on "+e.FS) {
		t.Errorf("Machine = %q", m)
	}
	if got := FSName(0xEF53); got != "ext4" {
		t.Errorf("FSName(ext4) = %q", got)
	}
	if got := FSName(0x1234); got != "fs magic 0x1234" {
		t.Errorf("FSName(unknown) = %q", got)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.md")
	for _, content := range []string{"first\n", "second\n"} {
		if err := WriteAtomic(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Errorf("read back %q, %v; want %q", b, err, content)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%d files in the directory, want only the report (no temporary left)", len(ents))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v; want 0644", fi.Mode(), err)
	}
}
