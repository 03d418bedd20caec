package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hubmesh/hubmesh/bench/internal/regclient"
)

// newTransport is an HTTP transport for the harness's clients. With ns set
// its connections are made from inside that network namespace (see
// dialIn), so the harness reaches nodes in namespaces it created without
// touching the network of the namespace it runs in.
func newTransport(ns string, conns int) *http.Transport {
	t := regclient.NewTransport(conns)
	if ns != "" {
		t.DialContext = dialIn(ns)
	}
	return t
}

// dialIn returns a dial function whose sockets live in network namespace
// ns. A socket belongs to the namespace of the thread that creates it, so
// each dial runs on a goroutine locked to its OS thread, which enters ns,
// dials (the socket is created on that thread; addresses are IP literals,
// so there is no resolver hop) and goes back. If the thread cannot go
// back it stays locked, and Go discards it when the goroutine ends.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			c, restored, err := dialInLocked(ctx, ns, network, addr)
			if restored {
				runtime.UnlockOSThread()
			}
			done <- result{c, err}
		}()
		r := <-done
		return r.c, r.err
	}
}

// dialInLocked does dialIn's work on a locked thread and reports whether
// the thread is back in its own namespace.
func dialInLocked(ctx context.Context, ns, network, addr string) (net.Conn, bool, error) {
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return nil, true, fmt.Errorf("network namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return c, false, err
	}
	return c, true, err
}

// netnsPrefix starts the name of every namespace the harness creates; the
// harness's PID follows, so that leftovers of a killed run can be told
// from namespaces of a run in progress.
const netnsPrefix = "hmbench-"

// lab is a set of network namespaces: one holding a bridge, one per node
// with a veth pair to the bridge, and optionally one for a client. Every
// node's link is shaped to rate in both directions (tbf on the node's end
// for what it sends, on the bridge's end for what it receives); the
// client's link is not shaped.
type lab struct {
	bridge string   // namespace holding the bridge br0
	nodes  []string // namespace of node i+1, address nodeIP(i)
	client string   // client namespace, address clientIP, or ""
	rate   bitRate
	logf   func(string, ...any)
}

// subnet is the /24 the lab uses. It exists only inside the lab's
// namespaces, so it cannot clash with the host's networks.
const subnet = "10.231.0"

func nodeIP(i int) string { return subnet + "." + strconv.Itoa(i+1) }

const clientIP = subnet + ".200"

// newLab creates the namespaces for n nodes (and a client when withClient)
// and shapes the node links. On error everything created is removed.
func newLab(ctx context.Context, n int, rate bitRate, withClient bool, logf func(string, ...any)) (l *lab, err error) {
	prefix := fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())
	l = &lab{bridge: prefix + "br", rate: rate, logf: logf}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.close())
		}
	}()
	if err := ipCmd(ctx, "netns", "add", l.bridge); err != nil {
		return l, err
	}
	steps := [][]string{
		{"-n", l.bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", l.bridge, "link", "set", "br0", "up"},
	}
	if err := ipCmds(ctx, steps); err != nil {
		return l, err
	}
	attach := func(ns, port, ip string, shape bool) error {
		if err := ipCmd(ctx, "netns", "add", ns); err != nil {
			return err
		}
		err := ipCmds(ctx, [][]string{
			{"-n", l.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"-n", l.bridge, "link", "set", port, "master", "br0"},
			{"-n", l.bridge, "link", "set", port, "up"},
			{"-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		})
		if err != nil || !shape {
			return err
		}
		// Egress of the node's end: what the node sends. Egress of the
		// bridge's end: what it receives.
		if err := tc(ctx, ns, "eth0", rate); err != nil {
			return err
		}
		return tc(ctx, l.bridge, port, rate)
	}
	for i := range n {
		ns := fmt.Sprintf("%sn%d", prefix, i+1)
		l.nodes = append(l.nodes, ns)
		if err := attach(ns, fmt.Sprintf("n%d", i+1), nodeIP(i), true); err != nil {
			return l, err
		}
	}
	if withClient {
		l.client = prefix + "client"
		if err := attach(l.client, "client", clientIP, false); err != nil {
			return l, err
		}
	}
	return l, nil
}

// tbfBurst is the bucket of the shaper: 10ms at the rate, at least 64KiB
// (it must hold a full-size segment and cover a timer tick).
func tbfBurst(rate bitRate) int64 { return max(int64(rate.bytesPerSecond()/100), 64<<10) }

// tc shapes the egress of dev in namespace ns to rate with a token bucket
// and 20ms of queue.
func tc(ctx context.Context, ns, dev string, rate bitRate) error {
	return runCmd(ctx, "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
		"rate", strconv.FormatInt(int64(rate), 10)+"bit",
		"burst", strconv.FormatInt(tbfBurst(rate), 10),
		"latency", "20ms")
}

// close deletes the lab's namespaces; the veth pairs and the bridge go
// with them. Processes still running inside must have been stopped.
func (l *lab) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, ns := range append(append([]string{l.client}, l.nodes...), l.bridge) {
		if ns == "" {
			continue
		}
		if err := ipCmd(ctx, "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeStale deletes the namespaces of earlier harness runs that are no
// longer running (killed before they could clean up). Namespaces of other
// programs, and of runs still alive, are left alone.
func removeStale(ctx context.Context, logf func(string, ...any)) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	for _, name := range staleNamespaces(string(out), func(pid int) bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		return err == nil
	}) {
		logf("removing namespace %s left by an earlier run", name)
		if err := ipCmd(ctx, "netns", "del", name); err != nil {
			return err
		}
	}
	return nil
}

// staleNamespaces picks from `ip netns list` output the harness's
// namespaces whose run (the PID in the name) is gone.
func staleNamespaces(list string, alive func(pid int) bool) []string {
	var stale []string
	for line := range strings.SplitSeq(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rest, ok := strings.CutPrefix(f[0], netnsPrefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() || alive(pid) {
			continue
		}
		stale = append(stale, f[0])
	}
	return stale
}

func ipCmd(ctx context.Context, args ...string) error { return runCmd(ctx, "ip", args...) }

func ipCmds(ctx context.Context, cmds [][]string) error {
	for _, c := range cmds {
		if err := ipCmd(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

// runCmd runs a short command (10s at most) and returns its output in the
// error when it fails.
func runCmd(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// checkNetnsTools reports why the fan-out lab cannot be built here, or nil.
func checkNetnsTools() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, bin := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (iproute2; bench/install-iproute2.sh installs it)", bin)
		}
	}
	return nil
}

// listenIn opens a TCP listener inside network namespace ns (the same way
// dialIn dials). The harness itself only dials; tests listen.
func listenIn(ns, addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var r result
		restored := true
		r.err = func() error {
			self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
			if err != nil {
				return err
			}
			defer self.Close()
			target, err := os.Open("/run/netns/" + ns)
			if err != nil {
				return err
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return err
			}
			r.l, err = net.Listen("tcp", addr)
			if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
				restored = false
			}
			return err
		}()
		if restored {
			runtime.UnlockOSThread()
		}
		done <- r
	}()
	r := <-done
	return r.l, r.err
}
