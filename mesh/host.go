package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubmesh/hubmesh"
)

// DefaultListenAddrs are the multiaddrs a host listens on when
// HostConfig.ListenAddrs is empty: TCP and QUIC on port 4001.
var DefaultListenAddrs = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}

// identityFile is the path of the host key below HostConfig.DataDir.
const identityFile = "p2p/identity.key"

// HostConfig configures NewHost.
type HostConfig struct {
	// DataDir is the node's data directory. The host's identity key lives
	// at DataDir/p2p/identity.key; it is created (0600) on first start, so
	// the peer ID stays the same across restarts.
	DataDir string
	// ListenAddrs are the multiaddrs to listen on (port 0 picks a free
	// port). Empty means DefaultListenAddrs. Every address must be
	// listened on, or NewHost fails naming the one that could not.
	ListenAddrs []string
	// Registerer receives libp2p's own metrics. Nil disables them.
	Registerer prometheus.Registerer
	// Logger receives the host's logs. Required.
	Logger *slog.Logger
}

// Host is the node's libp2p host: QUIC and TCP transports, Noise and TLS
// security, yamux multiplexing; no relay, no NAT port mapping, no mDNS.
// Its connection gater admits only cluster members (SetMembers) and
// temporarily admitted peers (Admit), in both directions; a new host
// admits nobody, which is all a single node needs.
type Host struct {
	h      host.Host
	logger *slog.Logger
	gater  *memberGater

	// ctx is the parent of every RPC handler's context; Close cancels it
	// and waits for wg (handlers and gater enforcement).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	raft   *streamLayer // the layer receiving inbound Raft streams, if any
	closed bool
	expiry *time.Timer // fires when the next admission ends

	closeOnce sync.Once
	closeErr  error
}

// NewHost loads or creates the identity key and starts a host listening on
// cfg.ListenAddrs.
func NewHost(ctx context.Context, cfg HostConfig) (*Host, error) {
	if cfg.Logger == nil {
		return nil, fmt.Errorf("new p2p host: nil logger: %w", hubmesh.ErrInvalid)
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("new p2p host: empty data dir: %w", hubmesh.ErrInvalid)
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		listen = DefaultListenAddrs
	}
	laddrs := make([]ma.Multiaddr, 0, len(listen))
	for _, s := range listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("new p2p host: listen address %q: %v: %w", s, err, hubmesh.ErrInvalid)
		}
		laddrs = append(laddrs, a)
	}
	key, err := loadOrCreateIdentity(filepath.Join(cfg.DataDir, identityFile))
	if err != nil {
		return nil, fmt.Errorf("new p2p host: %w", err)
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("new p2p host: identity key: %w", err)
	}
	gater := newMemberGater()
	gater.self = self
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.NoListenAddrs, // listened on one by one below, to report failures per address
		// SO_REUSEPORT off for TCP: two processes must not share a listen
		// port silently; a port in use is an error. (QUIC's "reuse" means
		// dialing from the listen socket; its UDP sockets are exclusive.)
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Transport(quic.NewTransport),
		// Both security transports are offered; TLS 1.3 comes first, so
		// two hubmesh nodes settle on it: with AES-GCM in hardware it
		// costs a fraction of Noise's ChaCha20-Poly1305 per byte, and
		// blob exchange moves many bytes. Noise stays for peers that
		// only speak it.
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, muxer()),
		libp2p.SwarmOpts(swarm.WithDialRanker(tcpFirst)),
		libp2p.DisableRelay(),
		libp2p.ConnectionGater(gater),
	}
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("new p2p host: %w", err)
	}
	for _, a := range laddrs {
		if err := h.Network().Listen(a); err != nil {
			h.Close()
			return nil, fmt.Errorf("p2p listen on %s: %w", a, err)
		}
	}
	hh := &Host{h: h, logger: cfg.Logger, gater: gater}
	hh.ctx, hh.cancel = context.WithCancel(context.WithoutCancel(ctx))
	cfg.Logger.Info("p2p host listening", "peer_id", hh.ID(), "addrs", hh.Addrs())
	return hh, nil
}

// streamWindow is the receive window a yamux stream starts with. Bitswap
// opens a stream for every message it sends, and a message carries a
// whole chunk (1 MiB by default): with yamux's default 256 KiB start the
// sender waits for several window updates per chunk.
const streamWindow = 4 << 20

// muxer returns libp2p's yamux transport with a larger initial stream
// window (see streamWindow).
func muxer() *yamux.Transport {
	t := *yamux.DefaultTransport
	t.InitialStreamWindowSize = streamWindow
	return &t
}

// quicFallbackDelay is how long a dial waits for TCP before it also tries
// a peer's QUIC addresses.
const quicFallbackDelay = 250 * time.Millisecond

// tcpFirst is the host's dial ranker: a peer's TCP addresses are dialed at
// once, its QUIC addresses only quicFallbackDelay later (at once when it
// has no TCP address), and anything else after that. libp2p's default
// prefers QUIC, but between nodes in one cluster TCP with TLS and yamux
// moves blob chunks at about half the CPU per byte of quic-go (measured
// with BenchmarkExchangeFetch: ~285 against ~480 CPU ms for 64 MiB) and
// faster; QUIC remains for networks where TCP does not get through.
func tcpFirst(addrs []ma.Multiaddr) []network.AddrDelay {
	var tcp, quic, other []ma.Multiaddr
	for _, a := range addrs {
		switch {
		case hasProtocol(a, ma.P_QUIC_V1):
			quic = append(quic, a)
		case hasProtocol(a, ma.P_TCP):
			tcp = append(tcp, a)
		default:
			other = append(other, a)
		}
	}
	quicDelay := time.Duration(0)
	if len(tcp) > 0 {
		quicDelay = quicFallbackDelay
	}
	out := make([]network.AddrDelay, 0, len(addrs))
	for _, a := range tcp {
		out = append(out, network.AddrDelay{Addr: a})
	}
	for _, a := range quic {
		out = append(out, network.AddrDelay{Addr: a, Delay: quicDelay})
	}
	for _, a := range other {
		out = append(out, network.AddrDelay{Addr: a, Delay: quicDelay + quicFallbackDelay})
	}
	return out
}

// hasProtocol reports whether a contains protocol code.
func hasProtocol(a ma.Multiaddr, code int) bool {
	_, err := a.ValueForProtocol(code)
	return err == nil
}

// loadOrCreateIdentity reads the private key at path, or creates an
// Ed25519 key there (0600, written atomically) when there is none.
func loadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("identity key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode identity key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	return k, nil
}

// writeFileAtomic writes data to path through a fsynced temp file and a
// rename, then fsyncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// ID returns the host's peer ID.
func (h *Host) ID() string { return h.h.ID().String() }

// Addrs returns the multiaddrs peers can dial this host at, each ending in
// /p2p/<peer id>, with the real ports when port 0 was asked for. An
// unspecified listen IP (0.0.0.0) is expanded to the addresses of the
// machine's interfaces.
func (h *Host) Addrs() []string {
	addrs, err := h.h.Network().InterfaceListenAddresses()
	if err != nil {
		h.logger.Warn("list interface addresses", "err", err)
		addrs = h.h.Network().ListenAddresses()
	}
	p2p, err := ma.NewComponent("p2p", h.ID())
	if err != nil { // cannot happen for a valid peer ID
		h.logger.Error("p2p multiaddr component", "err", err)
		return nil
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Encapsulate(p2p).String())
	}
	return out
}

// AddAddrs records the multiaddrs of peers (each ending in /p2p/<peer
// id>) so that the host can dial them by peer ID, and returns the peer IDs
// in the order they first appear. An address without a peer ID, or one
// that does not parse, fails with an error wrapping hubmesh.ErrInvalid and
// records nothing.
func (h *Host) AddAddrs(addrs ...string) ([]string, error) {
	mas := make([]ma.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("peer address %q: %v: %w", s, err, hubmesh.ErrInvalid)
		}
		if _, id := peer.SplitAddr(a); id == "" {
			return nil, fmt.Errorf("peer address %q: no /p2p/<peer id>: %w", s, hubmesh.ErrInvalid)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("peer addresses: %v: %w", err, hubmesh.ErrInvalid)
	}
	ids := make([]string, 0, len(infos))
	for _, info := range infos {
		if info.ID == h.h.ID() {
			continue
		}
		h.h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.PermanentAddrTTL)
		ids = append(ids, info.ID.String())
	}
	return ids, nil
}

// Connect dials peerID (whose addresses must have been added) unless a
// connection exists already.
func (h *Host) Connect(ctx context.Context, peerID string) error {
	id, err := parsePeerID(peerID)
	if err != nil {
		return err
	}
	if err := h.h.Connect(memberDial(ctx), peer.AddrInfo{ID: id}); err != nil {
		return fmt.Errorf("connect to %s: %v: %w", peerID, err, hubmesh.ErrUnavailable)
	}
	return nil
}

// StreamLayer returns a Raft stream layer over this host on protocol
// RaftProtocol. Each call registers the protocol handler anew; inbound
// streams go to the layer returned last.
func (h *Host) StreamLayer() raft.StreamLayer {
	l := newStreamLayer(h.h, h.logger, h.dropStreamLayer)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.raft = l
	h.h.SetStreamHandler(RaftProtocol, l.handle)
	return l
}

// dropStreamLayer unregisters the Raft protocol handler if l is the
// current stream layer.
func (h *Host) dropStreamLayer(l *streamLayer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.raft == l {
		h.raft = nil
		h.h.RemoveStreamHandler(RaftProtocol)
	}
}

// Close stops listening, closes every connection, cancels the contexts of
// running RPC handlers and waits for them to return.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		if h.expiry != nil {
			h.expiry.Stop()
			h.expiry = nil
		}
		h.mu.Unlock()
		h.cancel()
		h.closeErr = h.h.Close()
		h.wg.Wait()
	})
	return h.closeErr
}
