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

// node is one `hubmesh serve` process started by the harness, in the root
// network namespace or in one the harness created.
type node struct {
	name     string // n1, n2, ...
	ns       string // network namespace, "" for the harness's own
	dir      string
	addrFile string
	logPath  string
	base     string // http://host:port, from the addr file
	id       string // libp2p peer ID == Raft server ID
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd.Wait returns
	waitErr  error         // valid once exited is closed
	hc       *http.Client  // probes and status, dialling inside ns
}

// nodeSpec says where a node listens and with which extra flags it runs.
type nodeSpec struct {
	ns       string
	httpAddr string // host:port
	p2pAddr  string // multiaddr
	args     []string
}

// startNode runs `hubmesh serve` for spec with its data under dir. It
// returns once the process is started; waitReady waits for it to serve.
// The process gets SIGTERM when ctx ends.
func startNode(ctx context.Context, bin, dir, name string, spec nodeSpec) (*node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &node{
		name: name, ns: spec.ns, dir: dir,
		addrFile: filepath.Join(dir, "addr.json"),
		logPath:  filepath.Join(dir, "server.log"),
		exited:   make(chan struct{}),
		hc:       &http.Client{Timeout: 10 * time.Second, Transport: newTransport(spec.ns, 4)},
	}
	args := append([]string{"serve",
		"--data-dir", filepath.Join(dir, "data"),
		"--http-addr", spec.httpAddr,
		"--p2p-addr", spec.p2pAddr,
		"--addr-file", n.addrFile,
		"--log-level", "warn",
		"--log-format", "text",
	}, spec.args...)
	logf, err := os.Create(n.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	n.cmd = nsCommand(ctx, spec.ns, bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.Cancel = func() error { return n.cmd.Process.Signal(syscall.SIGTERM) }
	n.cmd.WaitDelay = 15 * time.Second
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	return n, nil
}

// nsCommand is bin args run inside network namespace ns (through `ip netns
// exec`, which execs bin in place: the process's PID is bin's), or directly
// when ns is "".
func nsCommand(ctx context.Context, ns, bin string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.CommandContext(ctx, bin, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
}

// waitReady waits until the node has written its addr file and answers
// /readyz with 200, which a joining node does once it is a member.
func (n *node) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := n.poll(ctx, func() (bool, error) {
		b, err := os.ReadFile(n.addrFile)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		var a struct {
			HTTP   string `json:"http"`
			PeerID string `json:"peer_id"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return false, fmt.Errorf("addr file %s: %w", n.addrFile, err)
		}
		if a.HTTP == "" || a.PeerID == "" {
			return false, fmt.Errorf("addr file %s: no http address or peer id", n.addrFile)
		}
		n.base, n.id = "http://"+a.HTTP, a.PeerID
		return true, nil
	})
	if err == nil {
		err = n.poll(ctx, func() (bool, error) {
			resp, err := n.hc.Get(n.base + "/readyz")
			if err != nil {
				return false, nil // not listening yet
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode == http.StatusOK, nil
		})
	}
	if err != nil {
		return n.fail(fmt.Errorf("not ready within %s: %w", timeout, err))
	}
	return nil
}

// poll calls cond every 20ms until it is met, fails, the process exits,
// or ctx ends.
func (n *node) poll(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("exited: %v", n.waitErr)
		default:
		}
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-n.exited:
		case <-t.C:
		}
	}
}

// clusterStatus is the part of GET /api/v1/cluster/status the harness
// reads.
type clusterStatus struct {
	ID      string `json:"id"`
	Leader  string `json:"leader"`
	Members []struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		State string `json:"state"`
	} `json:"members"`
	Blobs struct {
		Count int64 `json:"count"`
		Bytes int64 `json:"bytes"`
	} `json:"blobs"`
}

// status asks the node for its view of the cluster.
func (n *node) status(ctx context.Context) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/api/v1/cluster/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: GET /api/v1/cluster/status: %s: %s", n.name, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: cluster status: %w", n.name, err)
	}
	return st, nil
}

// fail stops the node and returns err with the tail of its log.
func (n *node) fail(err error) error {
	_ = n.stop()
	return fmt.Errorf("%s: %w\n--- %s (tail)\n%s", n.name, err, n.logPath, tail(n.logPath, 2048))
}

// alive reports an error when the process has exited.
func (n *node) alive() error {
	select {
	case <-n.exited:
		return fmt.Errorf("%s exited: %v\n--- %s (tail)\n%s", n.name, n.waitErr, n.logPath, tail(n.logPath, 2048))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits up to 15s for the process to exit, then
// kills it.
func (n *node) stop() error {
	select {
	case <-n.exited:
		return nil
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-n.exited:
		return nil
	case <-t.C:
		_ = n.cmd.Process.Kill()
		<-n.exited
		return fmt.Errorf("%s: no exit within 15s of SIGTERM; killed", n.name)
	}
}

// cpu returns the user+system CPU time the process has used so far.
func (n *node) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.cmd.Process.Pid))
	if err != nil {
		return 0, errors.Join(err, n.alive())
	}
	return parseStatCPU(b)
}

// userHZ is the unit of the CPU times in /proc/PID/stat (fixed at 100 for
// user space on Linux).
const userHZ = 100

// parseStatCPU returns utime+stime from a /proc/PID/stat line. Fields are
// counted from the last ')' since the command name may contain spaces.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after comm", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] { // fields 14 and 15: utime, stime
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
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
