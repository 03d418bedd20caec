package mesh

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

func newTestHost(t *testing.T, dataDir string, listen ...string) *Host {
	t.Helper()
	h, err := NewHost(t.Context(), HostConfig{DataDir: dataDir, ListenAddrs: listen, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

func TestHostIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	h1, err := NewHost(t.Context(), HostConfig{DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	id := h1.ID()
	if err := h1.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, "p2p", "identity.key"))
	if err != nil {
		t.Fatalf("identity key not written: %v", err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("identity key mode = %o, want 600", perm)
	}
	h2 := newTestHost(t, dir, "/ip4/127.0.0.1/tcp/0")
	if h2.ID() != id {
		t.Errorf("peer ID after restart = %s, want %s", h2.ID(), id)
	}
	other := newTestHost(t, t.TempDir(), "/ip4/127.0.0.1/tcp/0")
	if other.ID() == id {
		t.Error("two data dirs produced the same peer ID")
	}
}

func TestHostCorruptIdentity(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "p2p"), 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "p2p", "identity.key")
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewHost(t.Context(), HostConfig{DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("NewHost with corrupt key: err = %v, want one naming %s", err, key)
	}
}

func TestHostConfigErrors(t *testing.T) {
	for name, cfg := range map[string]HostConfig{
		"bad multiaddr": {DataDir: t.TempDir(), ListenAddrs: []string{"127.0.0.1:4001"}, Logger: testLogger(t)},
		"no data dir":   {ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t)},
		"no logger":     {DataDir: t.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewHost(t.Context(), cfg); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Errorf("NewHost: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestHostListenAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tcpAddr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port)
	quicAddr := fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", pc.LocalAddr().(*net.UDPAddr).Port)
	for name, listen := range map[string][]string{
		"tcp":  {"/ip4/127.0.0.1/udp/0/quic-v1", tcpAddr},
		"quic": {"/ip4/127.0.0.1/tcp/0", quicAddr},
	} {
		t.Run(name, func(t *testing.T) {
			busy := listen[1]
			_, err := NewHost(t.Context(), HostConfig{DataDir: t.TempDir(), ListenAddrs: listen, Logger: testLogger(t)})
			if err == nil {
				t.Fatalf("NewHost on busy %s succeeded", busy)
			}
			if !strings.Contains(err.Error(), busy) {
				t.Errorf("error %q does not name the busy address %s", err, busy)
			}
			t.Log(err)
		})
	}
	// A second hubmesh host on the same port fails too (no SO_REUSEPORT sharing).
	h := newTestHost(t, t.TempDir(), "/ip4/127.0.0.1/tcp/0")
	addr := strings.TrimSuffix(h.Addrs()[0], "/p2p/"+h.ID())
	if _, err := NewHost(t.Context(), HostConfig{DataDir: t.TempDir(), ListenAddrs: []string{addr}, Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("second host on %s: err = %v, want one naming the address", addr, err)
	}
}

func TestHostAddrs(t *testing.T) {
	h := newTestHost(t, t.TempDir(), "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")
	addrs := h.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs = %v, want 2", addrs)
	}
	for _, a := range addrs {
		if !strings.HasSuffix(a, "/p2p/"+h.ID()) {
			t.Errorf("address %s lacks /p2p/%s", a, h.ID())
		}
		if strings.Contains(a, "/tcp/0/") || strings.Contains(a, "/udp/0/") {
			t.Errorf("address %s still has port 0", a)
		}
	}
}

func TestHostAddAddrsRejectsBadInput(t *testing.T) {
	h := newTestHost(t, t.TempDir(), "/ip4/127.0.0.1/tcp/0")
	for _, a := range []string{"", "garbage", "/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/4001/p2p/notapeer"} {
		if _, err := h.AddAddrs(a); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("AddAddrs(%q): err = %v, want ErrInvalid", a, err)
		}
	}
	if err := h.Connect(t.Context(), "notapeer"); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("Connect(bad id): err = %v, want ErrInvalid", err)
	}
	l := h.StreamLayer()
	defer l.Close()
	if _, err := l.Dial("notapeer", time.Second); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("Dial(bad id): err = %v, want ErrInvalid", err)
	}
}

// TestRaftStreamLayer connects two hosts over each transport and
// round-trips bytes both ways through the Raft stream layer.
func TestRaftStreamLayer(t *testing.T) {
	for _, tr := range []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"} {
		t.Run(tr, func(t *testing.T) {
			a := newTestHost(t, t.TempDir(), tr)
			b := newTestHost(t, t.TempDir(), tr)
			a.SetMembers([]string{a.ID(), b.ID()})
			b.SetMembers([]string{a.ID(), b.ID()})
			ids, err := a.AddAddrs(b.Addrs()...)
			if err != nil || len(ids) != 1 || ids[0] != b.ID() {
				t.Fatalf("AddAddrs = %v, %v; want [%s]", ids, err, b.ID())
			}
			la, lb := a.StreamLayer(), b.StreamLayer()
			defer la.Close()
			defer lb.Close()
			if got := lb.Addr().String(); got != b.ID() {
				t.Errorf("Addr() = %s, want peer ID %s", got, b.ID())
			}

			type accepted struct {
				c   net.Conn
				err error
			}
			acc := make(chan accepted, 1)
			go func() {
				c, err := lb.Accept()
				acc <- accepted{c, err}
			}()
			ca, err := la.Dial(raft.ServerAddress(b.ID()), 10*time.Second)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer ca.Close()
			deadline := time.Now().Add(10 * time.Second)
			if err := ca.SetDeadline(deadline); err != nil {
				t.Fatal(err)
			}
			if _, err := ca.Write([]byte("append entries")); err != nil {
				t.Fatalf("Write: %v", err)
			}
			var got accepted
			select {
			case got = <-acc:
			case <-t.Context().Done():
				t.Fatal("no stream accepted")
			case <-time.After(10 * time.Second):
				t.Fatal("no stream accepted within 10s")
			}
			if got.err != nil {
				t.Fatalf("Accept: %v", got.err)
			}
			cb := got.c
			defer cb.Close()
			if err := cb.SetDeadline(deadline); err != nil {
				t.Fatal(err)
			}
			if cb.RemoteAddr().String() != a.ID() || cb.LocalAddr().String() != b.ID() {
				t.Errorf("accepted conn %s -> %s, want %s -> %s", cb.RemoteAddr(), cb.LocalAddr(), a.ID(), b.ID())
			}
			buf := make([]byte, len("append entries"))
			if _, err := io.ReadFull(cb, buf); err != nil || string(buf) != "append entries" {
				t.Fatalf("B read %q, %v", buf, err)
			}
			if _, err := cb.Write([]byte("ok")); err != nil {
				t.Fatalf("B write: %v", err)
			}
			buf = buf[:2]
			if _, err := io.ReadFull(ca, buf); err != nil || string(buf) != "ok" {
				t.Fatalf("A read %q, %v", buf, err)
			}

			// After Close, Accept fails at once and new streams are refused.
			if err := lb.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := lb.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Accept after Close: err = %v, want net.ErrClosed", err)
			}
			// libp2p may negotiate the protocol lazily, so the refusal shows
			// at Dial or at the first exchange; either way no bytes flow.
			if c, err := la.Dial(raft.ServerAddress(b.ID()), 10*time.Second); err == nil {
				defer c.Close()
				if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
					t.Fatal(err)
				}
				_, werr := c.Write([]byte("x"))
				_, rerr := c.Read(buf)
				if werr == nil && rerr == nil {
					t.Error("a stream to a closed stream layer carried data")
				}
			}
		})
	}
}
