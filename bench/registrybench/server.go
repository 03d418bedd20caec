package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one registry process under test, started by the harness.
type server struct {
	name    string // column label, e.g. "hubmesh"
	version string // first line of the binary's version output
	base    string // http://127.0.0.1:PORT
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait returns
	waitErr error         // valid once exited is closed
	hc      *http.Client  // for readiness probes only
}

// startHubmesh runs `hubmesh serve` with its data in dir and waits until it
// answers /readyz and /v2/. The HTTP address comes from the addr file.
func startHubmesh(ctx context.Context, ready time.Duration, name, bin, dir string) (*server, error) {
	data := filepath.Join(dir, "data")
	addrFile := filepath.Join(dir, "addr.json")
	s, err := spawn(ctx, name, bin, dir,
		"serve", "--data-dir", data,
		"--http-addr", "127.0.0.1:0",
		"--p2p-addr", "/ip4/127.0.0.1/tcp/0",
		"--addr-file", addrFile,
		"--log-level", "error")
	if err != nil {
		return nil, err
	}
	s.version = versionOf(ctx, bin, "version")
	ctx, cancel := context.WithTimeout(ctx, ready)
	defer cancel()
	err = s.poll(ctx, func() (bool, error) {
		b, err := os.ReadFile(addrFile)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		var a struct {
			HTTP string `json:"http"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return false, fmt.Errorf("addr file %s: %w", addrFile, err)
		}
		if a.HTTP == "" {
			return false, fmt.Errorf("addr file %s: no http address", addrFile)
		}
		s.base = "http://" + a.HTTP
		return true, nil
	})
	if err == nil {
		err = s.poll(ctx, s.probe("/readyz"))
	}
	if err == nil {
		err = s.poll(ctx, s.probe("/v2/"))
	}
	if err != nil {
		return nil, s.fail(err)
	}
	return s, nil
}

// startDistribution runs CNCF distribution with filesystem storage in dir,
// listening on 127.0.0.1:0, and waits until it answers /v2/. Distribution
// does not report the port it bound (it logs it only at info level, and the
// benchmark runs it at error level like a production deployment would), so
// the harness reads the listening socket of the process from /proc: no port
// is guessed and nothing else can take it in between.
func startDistribution(ctx context.Context, ready time.Duration, name, bin, dir string) (*server, error) {
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := os.WriteFile(cfgPath, []byte(distributionConfig(filepath.Join(dir, "data"))), 0o644); err != nil {
		return nil, fmt.Errorf("write distribution config: %w", err)
	}
	s, err := spawn(ctx, name, bin, dir, "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	s.version = versionOf(ctx, bin, "--version")
	ctx, cancel := context.WithTimeout(ctx, ready)
	defer cancel()
	err = s.poll(ctx, func() (bool, error) {
		ports, err := listeningPorts(s.cmd.Process.Pid)
		if err != nil || len(ports) == 0 {
			return false, err
		}
		if len(ports) > 1 {
			return false, fmt.Errorf("distribution listens on %d ports %v, want one", len(ports), ports)
		}
		s.base = "http://127.0.0.1:" + strconv.Itoa(ports[0])
		return true, nil
	})
	if err == nil {
		err = s.poll(ctx, s.probe("/v2/"))
	}
	if err != nil {
		return nil, s.fail(err)
	}
	return s, nil
}

// distributionConfig is the stock example configuration of distribution
// (filesystem driver, in-memory blob descriptor cache) on loopback, with
// delete enabled, no auth, and only errors logged.
func distributionConfig(root string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  tag:
    concurrencylimit: 8
http:
  addr: 127.0.0.1:0
`, root)
}

// spawn starts bin with args, logging to dir/server.log. The process gets
// SIGTERM when ctx (the whole run's context) ends.
func spawn(ctx context.Context, name, bin, dir string, args ...string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	s := &server{
		name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{}),
		hc: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// probe returns a poll condition that is met when GET path answers 200.
func (s *server) probe(path string) func() (bool, error) {
	return func() (bool, error) {
		resp, err := s.hc.Get(s.base + path)
		if err != nil {
			return false, nil // not listening yet
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK, nil
	}
}

// poll calls cond every 20ms until it is met, fails, the process exits, or
// ctx ends.
func (s *server) poll(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("exited early: %v", s.waitErr)
		default:
		}
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", context.Cause(ctx))
		case <-s.exited:
		case <-t.C:
		}
	}
}

// fail stops the server and returns err with the tail of its log.
func (s *server) fail(err error) error {
	_ = s.stop()
	return fmt.Errorf("%s: %w\n--- %s (tail)\n%s", s.name, err, s.logPath, tail(s.logPath, 2048))
}

// stop sends SIGTERM and waits up to 15s for the process to exit, then kills it.
func (s *server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
		return nil
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("%s: no exit within 15s of SIGTERM; killed", s.name)
	}
}

// alive reports an error when the process has exited.
func (s *server) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("%s exited: %v\n--- %s (tail)\n%s", s.name, s.waitErr, s.logPath, tail(s.logPath, 2048))
	default:
		return nil
	}
}

// procStatus returns a field of /proc/PID/status in bytes (the kB fields).
func (s *server) procStatus(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, errors.Join(err, s.alive())
	}
	return parseStatusKB(b, field)
}

// cpu returns the user+system CPU time the process has used so far.
func (s *server) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, errors.Join(err, s.alive())
	}
	return parseStatCPU(b)
}

// parseStatusKB finds "field:   N kB" in a /proc/PID/status text.
func parseStatusKB(status []byte, field string) (int64, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status %s: unexpected %q", field, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status %s: %w", field, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("status: no field %s", field)
}

// userHZ is the unit of the CPU times in /proc/PID/stat; the kernel fixes it
// at 100 for user space on every Linux architecture.
const userHZ = 100

// parseStatCPU returns utime+stime from a /proc/PID/stat line. The command
// name (field 2) may contain spaces and parentheses, so fields are counted
// from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after comm", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// listeningPorts returns the TCP ports on which process pid has a listening
// socket, by matching the socket inodes among its file descriptors against
// the LISTEN entries of /proc/PID/net/tcp{,6}.
func listeningPorts(pid int) ([]int, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		p, err := parseListening(b, inodes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", table, err)
		}
		ports = append(ports, p...)
	}
	return ports, nil
}

// tcpListen is the socket state LISTEN in /proc/net/tcp.
const tcpListen = "0A"

// parseListening returns the local ports of the LISTEN sockets in a
// /proc/net/tcp table whose inode is in inodes.
func parseListening(table []byte, inodes map[string]bool) ([]int, error) {
	var ports []int
	lines := strings.Split(strings.TrimSpace(string(table)), "\n")
	for _, line := range lines[1:] { // header first
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != tcpListen || !inodes[f[9]] {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("bad local address %q", f[1])
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad local port %q: %w", hexPort, err)
		}
		ports = append(ports, int(p))
	}
	return ports, nil
}

// versionOf runs `bin arg` and returns the first line of its output, with
// the binary's path (distribution prints its argv[0]) cut to its base name,
// or "unknown".
func versionOf(ctx context.Context, bin, arg string) string {
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

// tail returns up to the last n bytes of the file at path.
func tail(path string, n int64) string {
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
