// Package proc runs the processes a benchmark harness measures (registries,
// cluster nodes) and reads what Linux reports about them and the machine:
// CPU time and memory from /proc, listening ports, MemAvailable. It also
// prefaults memory before a run. Linux only; it imports nothing of the
// harnesses.
package proc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is a child process started by Start, its output going to a log
// file.
type Process struct {
	Name    string // label in errors, e.g. "hubmesh" or "n1"
	LogPath string
	Cmd     *exec.Cmd
	exited  chan struct{} // closed when Cmd.Wait returns
	waitErr error         // valid once exited is closed
}

// Start starts cmd with its stdout and stderr in a new file at logPath.
// cmd should come from exec.CommandContext: when that context ends, the
// process gets SIGTERM, and is killed 15s later if it has not exited.
func Start(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, cmd.Path, err)
	}
	p := &Process{Name: name, LogPath: logPath, Cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Poll calls cond every 20ms until it is met, fails, the process exits, or
// ctx ends; then it returns cond's error, the exit, or ctx's cause.
func (p *Process) Poll(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("exited: %v", p.waitErr)
		default:
		}
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-p.exited:
		case <-t.C:
		}
	}
}

// Fail stops the process and returns err with the tail of its log.
func (p *Process) Fail(err error) error {
	_ = p.Stop()
	return fmt.Errorf("%s: %w\n--- %s (tail)\n%s", p.Name, err, p.LogPath, Tail(p.LogPath, 2048))
}

// Alive reports an error, with the tail of the log, when the process has
// exited.
func (p *Process) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n--- %s (tail)\n%s", p.Name, p.waitErr, p.LogPath, Tail(p.LogPath, 2048))
	default:
		return nil
	}
}

// Stop sends SIGTERM and waits up to 15s for the process to exit, then
// kills it.
func (p *Process) Stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s: no exit within 15s of SIGTERM; killed", p.Name)
	}
}

// CPU returns the user+system CPU time the process has used so far.
func (p *Process) CPU() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if err != nil {
		return 0, errors.Join(err, p.Alive())
	}
	return ParseStatCPU(b)
}

// Status returns a kB field of /proc/PID/status (VmRSS, VmHWM) in bytes.
func (p *Process) Status(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, errors.Join(err, p.Alive())
	}
	return ParseKB(b, field)
}

// Addrs is what `hubmesh serve --addr-file` writes.
type Addrs struct {
	HTTP   string `json:"http"`
	PeerID string `json:"peer_id"`
}

// ReadAddrFile reads the addr file at path; ok is false while it does not
// exist yet.
func ReadAddrFile(path string) (a Addrs, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return a, false, nil
	}
	if err != nil {
		return a, false, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, false, fmt.Errorf("addr file %s: %w", path, err)
	}
	return a, true, nil
}

// HTTPReady returns a Poll condition that is met when GET url answers 200.
// Failing to connect counts as not yet listening.
func HTTPReady(hc *http.Client, url string) func() (bool, error) {
	return func() (bool, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return false, nil // not listening yet
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK, nil
	}
}

// VersionOf runs `bin arg` and returns the first line of its output, with
// the binary's path (distribution prints its argv[0]) cut to its base name,
// or "unknown".
func VersionOf(ctx context.Context, bin, arg string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, arg).Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if rest, ok := strings.CutPrefix(line, bin+" "); ok {
		line = filepath.Base(bin) + " " + rest
	}
	return line
}

// Tail returns up to the last n bytes of the file at path, or the error
// opening it.
func Tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
