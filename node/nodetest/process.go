package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Default deadlines. Every wait is also bounded by the test's context.
const (
	// DefaultStartTimeout bounds the wait for the addr file and /readyz.
	DefaultStartTimeout = 60 * time.Second
	// DefaultStopTimeout bounds the wait for exit after SIGTERM or SIGKILL.
	DefaultStopTimeout = 30 * time.Second
	// pollInterval paces the addr file and /readyz polls while a node starts.
	pollInterval = 20 * time.Millisecond
)

// Options configure one hubmesh process.
type Options struct {
	// DataDir is the node's data directory; t.TempDir() when empty.
	DataDir string
	// Args are extra command-line arguments appended after the harness's
	// own serve flags (for example "--log-level", "debug").
	Args []string
	// Env are extra KEY=VALUE pairs. The process inherits the test's
	// environment minus every HUBMESH_* variable, so a developer's shell
	// settings cannot change what the test runs.
	Env []string
	// StartTimeout bounds the wait for readiness; DefaultStartTimeout if 0.
	StartTimeout time.Duration
	// AdminPassword is the password of the site administrator "admin",
	// written to a 0600 file in the test's temp dir and passed with
	// --admin-password-file (a node that joins or has state ignores it).
	// When empty, Start makes a random one; StartCluster and Join give
	// every node of a cluster the same. Admin returns it.
	AdminPassword string
	// NoAdminPassword starts the node without --admin-password-file, so
	// that it generates the password and logs it once. Admin then returns
	// an empty password and CLI adds no credentials.
	NoAdminPassword bool
}

// Addrs is the content of a node's addr file.
type Addrs struct {
	HTTP   string   `json:"http"`
	P2P    []string `json:"p2p"`
	PeerID string   `json:"peer_id"`
}

// Process is one `hubmesh serve` run by a test. Its methods fail the test
// (t.Fatal) on error, so they must be called from the test goroutine.
type Process struct {
	t    testing.TB
	bin  string
	opts Options
	dir  string // holds the addr files, one per run
	id   int64  // numbers the Process among those of the test binary
	seq  int    // how many times this node was started
	name string // names the current run in log lines: hubmesh#<process>.<run>

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	ended  bool          // the test ended this run (Kill or Stop)
	paused bool          // stopped with SIGSTOP by Pause
	state  *os.ProcessState
	addrs  Addrs
}

var procCount atomic.Int64

// Start runs `hubmesh serve` with a data dir (Options.DataDir or a fresh
// t.TempDir()), HTTP on 127.0.0.1:0, p2p on /ip4/127.0.0.1/tcp/0 and an addr
// file, then waits until the addr file is written and /readyz answers 200.
// The process output goes to t.Log. When the test ends the process is
// killed (SIGKILL) if it still runs.
func Start(t testing.TB, opts Options) *Process {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.NoAdminPassword {
		opts.AdminPassword = ""
	} else if opts.AdminPassword == "" {
		opts.AdminPassword = newPassword(t)
	}
	p := &Process{t: t, bin: Binary(t), opts: opts, dir: t.TempDir()}
	t.Cleanup(p.cleanup)
	p.start()
	return p
}

// URL is the node's HTTP base URL, e.g. http://127.0.0.1:41234.
func (p *Process) URL() string { return "http://" + p.Addr() }

// Addr is the node's HTTP host:port, as a registry reference wants it.
func (p *Process) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs.HTTP
}

// PeerID is the node's libp2p peer ID.
func (p *Process) PeerID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs.PeerID
}

// P2PAddrs are the node's libp2p multiaddrs.
func (p *Process) P2PAddrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.addrs.P2P...)
}

// DataDir is the node's data directory; it survives Kill, Stop and Restart.
func (p *Process) DataDir() string { return p.opts.DataDir }

// AddrFile is the path of the addr file of the current run.
func (p *Process) AddrFile() string {
	return filepath.Join(p.dir, fmt.Sprintf("addr-%d.json", p.seq))
}

// PID is the process id of the current run.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Running reports whether the current run has not exited yet.
func (p *Process) Running() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() {
	p.t.Helper()
	if !p.Running() {
		p.t.Fatalf("%s: Kill: process already exited: %v", p.name, p.exitState())
	}
	p.setEnded()
	_ = p.signal(syscall.SIGKILL)
	if err := p.wait(p.t.Context(), DefaultStopTimeout); err != nil {
		p.t.Fatalf("%s: Kill: %v", p.name, err)
	}
	p.t.Logf("%s: killed (SIGKILL)", p.name)
}

// Pause stops the process with SIGSTOP: it keeps its sockets open but
// answers nothing, like a paused container or a node cut off the network.
// Requests sent to it wait (bound them with a timeout) until Resume.
func (p *Process) Pause() {
	p.t.Helper()
	if !p.Running() {
		p.t.Fatalf("%s: Pause: process already exited: %v", p.name, p.exitState())
	}
	if err := p.signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("%s: SIGSTOP: %v", p.name, err)
	}
	p.setPaused(true)
	p.t.Logf("%s: paused (SIGSTOP)", p.name)
}

// Resume continues a process stopped by Pause (SIGCONT).
func (p *Process) Resume() {
	p.t.Helper()
	if err := p.signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("%s: SIGCONT: %v", p.name, err)
	}
	p.setPaused(false)
	p.t.Logf("%s: resumed (SIGCONT)", p.name)
}

func (p *Process) setPaused(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = v
}

// Stop sends SIGTERM, waits for the process to exit and fails the test
// unless it exited with status 0.
func (p *Process) Stop() {
	p.t.Helper()
	if !p.Running() {
		p.t.Fatalf("%s: Stop: process already exited: %v", p.name, p.exitState())
	}
	p.setEnded()
	if err := p.signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("%s: SIGTERM: %v", p.name, err)
	}
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused { // a stopped process handles SIGTERM only once continued
		p.Resume()
	}
	start := time.Now()
	if err := p.wait(p.t.Context(), DefaultStopTimeout); err != nil {
		_ = p.signal(syscall.SIGKILL)
		p.t.Fatalf("%s: Stop: %v (killed)", p.name, err)
	}
	st := p.exitState()
	if st.ExitCode() != 0 {
		p.t.Fatalf("%s: after SIGTERM: %v, want exit status 0", p.name, st)
	}
	p.t.Logf("%s: stopped (SIGTERM, exit 0) in %s", p.name, time.Since(start).Round(time.Millisecond))
}

// Restart starts the node again on the same data dir, with a new HTTP port,
// and waits until it is ready. A node that still runs is stopped first
// (SIGTERM, exit 0 asserted).
func (p *Process) Restart() {
	p.t.Helper()
	if p.Running() {
		p.Stop()
	}
	p.start()
}

// ExitCode is the exit code of the last run, or -1 while it runs or when
// it was ended by a signal.
func (p *Process) ExitCode() int {
	if st := p.exitState(); st != nil {
		return st.ExitCode()
	}
	return -1
}

func (p *Process) start() {
	p.t.Helper()
	p.seq++
	addrFile := p.AddrFile()
	if err := os.Remove(addrFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.t.Fatalf("remove stale addr file: %v", err)
	}
	if p.seq == 1 {
		p.id = procCount.Add(1)
	}
	name := fmt.Sprintf("hubmesh#%d.%d", p.id, p.seq)
	p.name = name
	args := []string{
		"serve",
		"--data-dir", p.opts.DataDir,
		"--http-addr", "127.0.0.1:0",
		"--p2p-addr", "/ip4/127.0.0.1/tcp/0",
		"--addr-file", addrFile,
		"--log-format", "text",
	}
	if !p.opts.NoAdminPassword {
		args = append(args, "--admin-password-file", p.writeAdminPassword())
	}
	args = append(args, p.opts.Args...)
	cmd := exec.Command(p.bin, args...)
	cmd.Env = append(cleanEnv(), p.opts.Env...)
	out := &lineLogger{t: p.t, prefix: name + ": "}
	cmd.Stdout = out
	cmd.Stderr = out
	// A grandchild holding the pipes must not hang Wait forever.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.bin, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.state, p.addrs, p.ended, p.paused = cmd, exited, nil, Addrs{}, false, false
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		out.flush()
		p.mu.Lock()
		p.state = cmd.ProcessState
		if p.addrs.HTTP != "" {
			unregisterRunning(p.addrs.HTTP, p)
		}
		p.mu.Unlock()
		close(exited)
	}()
	p.t.Logf("%s: started pid %d: %s %s", name, cmd.Process.Pid, p.bin, strings.Join(args, " "))

	ctx, cancel := context.WithTimeout(p.t.Context(), p.opts.StartTimeout)
	defer cancel()
	addrs, err := p.waitReady(ctx, addrFile)
	if err != nil {
		p.setEnded() // reported here; cleanup kills it if it still runs
		p.t.Fatalf("%s: not ready: %v", name, err)
	}
	p.mu.Lock()
	p.addrs = addrs
	if p.state == nil { // still running: CLI may find it by its address
		registerRunning(addrs.HTTP, p)
	}
	p.mu.Unlock()
	p.t.Logf("%s: ready: http %s, peer %s", name, addrs.HTTP, addrs.PeerID)
}

// waitReady polls for the addr file and then /readyz. It returns early
// when the process exits, with its exit status.
func (p *Process) waitReady(ctx context.Context, addrFile string) (Addrs, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	var addrs Addrs
	var lastErr error = errors.New("addr file not written yet")
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return addrs, fmt.Errorf("%w; last: %v", ctx.Err(), lastErr)
		case <-exited:
			return addrs, fmt.Errorf("process exited before it was ready: %v", p.exitState())
		case <-tick.C:
		}
		if addrs.HTTP == "" {
			b, err := os.ReadFile(addrFile)
			if err != nil {
				lastErr = err
				continue
			}
			if err := json.Unmarshal(b, &addrs); err != nil {
				return addrs, fmt.Errorf("addr file %s: %w (content %q)", addrFile, err, b)
			}
			if addrs.HTTP == "" || addrs.PeerID == "" || len(addrs.P2P) == 0 {
				return addrs, fmt.Errorf("addr file %s lacks http, p2p or peer_id: %s", addrFile, b)
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addrs.HTTP+"/readyz", nil)
		if err != nil {
			return addrs, err
		}
		resp, err := client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return addrs, nil
		}
		lastErr = fmt.Errorf("GET /readyz: %s", resp.Status)
	}
}

func (p *Process) signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// wait blocks until the current run has exited, up to timeout.
func (p *Process) wait(ctx context.Context, timeout time.Duration) error {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("process did not exit: %w", ctx.Err())
	}
}

func (p *Process) exitState() *os.ProcessState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

func (p *Process) setEnded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended = true
}

// cleanup kills a process the test left running, and fails the test if
// the process exited by itself (a crash the test did not cause). It runs
// after the test's context is cancelled, so it waits on a fresh deadline.
func (p *Process) cleanup() {
	p.mu.Lock()
	cmd, ended := p.cmd, p.ended
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if !p.Running() {
		if !ended {
			p.t.Errorf("%s exited while the test ran: %v", p.name, p.exitState())
		}
		return
	}
	_ = p.signal(syscall.SIGKILL)
	if err := p.wait(context.Background(), DefaultStopTimeout); err != nil {
		p.t.Errorf("%s: cleanup: %v", p.name, err)
	}
}

// cleanEnv is the test's environment without HUBMESH_* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HUBMESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// lineLogger writes each complete line it receives to t.Log. exec.Cmd
// copies the process output into it and Wait returns only after the copy
// is done, so no line is logged after the test has finished.
type lineLogger struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.t.Log(l.prefix + string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(b), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.t.Log(l.prefix + string(l.buf))
		l.buf = nil
	}
}
