package proc

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcParsing(t *testing.T) {
	status := "Name:\tregistry\nVmHWM:\t   86228 kB\nVmRSS:\t   42112 kB\n"
	if got, err := ParseKB([]byte(status), "VmRSS"); err != nil || got != 42112*1024 {
		t.Errorf("VmRSS = %d, %v", got, err)
	}
	if _, err := ParseKB([]byte(status), "VmSwap"); err == nil {
		t.Error("missing field: want an error")
	}
	if n, err := ParseKB([]byte("MemTotal: 10 kB\nMemAvailable:   2048 kB\n"), "MemAvailable"); err != nil || n != 2048<<10 {
		t.Errorf("MemAvailable = %d, %v", n, err)
	}
	// comm with a space and a ')' must not shift the fields; utime 250 + stime 50 ticks.
	stat := "4242 (my reg) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	if got, err := ParseStatCPU([]byte(stat)); err != nil || got != 3*time.Second {
		t.Errorf("cpu = %v, %v", got, err)
	}
	if d, err := ParseStatCPU([]byte("123 (hub mesh) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0")); err != nil || d != 3*time.Second {
		t.Errorf("ParseStatCPU = %v, %v; want 3s", d, err)
	}
	if _, err := ParseStatCPU([]byte("garbage")); err == nil {
		t.Error("ParseStatCPU(garbage): no error")
	}
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A4C5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0
   2: 0100007F:A4C5 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
`
	got, err := parseListening([]byte(table), map[string]bool{"111": true, "333": true})
	if err != nil || len(got) != 1 || got[0] != 0xA4C5 {
		t.Errorf("listening = %v, %v; want [%d] (inode 222 is another process's, 333 is not listening)", got, err, 0xA4C5)
	}
}

func TestListeningPortsFindsOwnListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ports, err := ListeningPorts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want := ln.Addr().(*net.TCPAddr).Port
	for _, p := range ports {
		if p == want {
			return
		}
	}
	t.Errorf("ports %v do not include the test's listener %d", ports, want)
}

func TestPrefault(t *testing.T) {
	if got := PrefaultSize(4<<30, 24<<30); got != 6<<30 {
		t.Errorf("PrefaultSize(4GiB, 24GiB avail) = %d, want 6GiB", got)
	}
	if got := PrefaultSize(4<<30, 5<<30); got != 3<<30 {
		t.Errorf("PrefaultSize(4GiB, 5GiB avail) = %d, want 3GiB (2GiB left alone)", got)
	}
	if got := PrefaultSize(4<<30, 1<<30); got != 0 {
		t.Errorf("PrefaultSize(4GiB, 1GiB avail) = %d, want 0", got)
	}
	if _, err := Prefault(t.Context(), 5<<20+1); err != nil {
		t.Fatal(err)
	}
	if avail, err := MemAvailable(); err != nil || avail <= 0 {
		t.Errorf("MemAvailable = %d, %v", avail, err)
	}
}

func TestProcessLifecycle(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("sleeper", exec.CommandContext(t.Context(), "sleep", "60"), filepath.Join(dir, "sleep.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Alive(); err != nil {
		t.Fatalf("Alive of a running process: %v", err)
	}
	if _, err := p.CPU(); err != nil {
		t.Errorf("CPU: %v", err)
	}
	if rss, err := p.Status("VmRSS"); err != nil || rss <= 0 {
		t.Errorf("VmRSS = %d, %v", rss, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Alive(); err == nil || !strings.Contains(err.Error(), "sleeper exited") {
		t.Errorf("Alive after Stop: %v, want the exit", err)
	}

	q, err := Start("failer", exec.CommandContext(t.Context(), "sh", "-c", "echo boom; exit 3"), filepath.Join(dir, "fail.log"))
	if err != nil {
		t.Fatal(err)
	}
	err = q.Poll(t.Context(), func() (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Poll of an exited process: %v, want its exit status", err)
	}
	if err := q.Fail(err); !strings.Contains(err.Error(), "failer: exited: exit status 3") || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Fail = %q, want the exit and the log's tail", err)
	}
	if _, err := Start("missing", exec.CommandContext(t.Context(), filepath.Join(dir, "nope")), filepath.Join(dir, "m.log")); err == nil ||
		!strings.Contains(err.Error(), "start missing") {
		t.Errorf("Start of a missing binary: %v", err)
	}
}
