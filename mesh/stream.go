package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hubmesh/hubmesh"
)

// RaftProtocol is the libp2p protocol of Raft RPC streams.
const RaftProtocol protocol.ID = "/hubmesh/raft/1.0.0"

// acceptTimeout bounds how long an inbound stream waits for Accept before
// it is reset (Raft accepts in a tight loop, so this only trips when the
// transport is shutting down).
const acceptTimeout = 10 * time.Second

// streamLayer implements raft.StreamLayer over libp2p streams. Raft
// server addresses are peer ID strings.
type streamLayer struct {
	h       host.Host
	logger  *slog.Logger
	conns   chan net.Conn
	onClose func(*streamLayer) // unregisters the handler if l is still current

	closeOnce sync.Once
	closed    chan struct{}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(h host.Host, logger *slog.Logger, onClose func(*streamLayer)) *streamLayer {
	return &streamLayer{h: h, logger: logger, onClose: onClose, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *streamLayer) handle(s network.Stream) {
	t := time.NewTimer(acceptTimeout)
	defer t.Stop()
	select {
	case l.conns <- &streamConn{Stream: s}:
	case <-l.closed:
		s.Reset()
	case <-t.C:
		l.logger.Warn("raft stream not accepted in time", "peer", s.Conn().RemotePeer().String())
		s.Reset()
	}
}

// Dial opens a Raft stream to the peer whose ID is address.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, err := peer.Decode(string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %q: not a peer id: %v: %w", address, err, hubmesh.ErrInvalid)
	}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	s, err := l.h.NewStream(memberDial(ctx), id, RaftProtocol)
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %v: %w", address, err, hubmesh.ErrUnavailable)
	}
	return &streamConn{Stream: s}, nil
}

// Accept waits for the next inbound Raft stream.
func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, fmt.Errorf("raft stream layer: %w", net.ErrClosed)
	}
}

// Close stops accepting streams. Streams already accepted stay open.
func (l *streamLayer) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.onClose(l)
	})
	return nil
}

// Addr returns this host's peer ID as a net.Addr.
func (l *streamLayer) Addr() net.Addr { return peerAddr(l.h.ID()) }

// peerAddr is a peer ID posing as a net.Addr.
type peerAddr peer.ID

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return peer.ID(a).String() }

// streamConn is a libp2p stream posing as a net.Conn.
type streamConn struct {
	network.Stream
}

func (c *streamConn) LocalAddr() net.Addr  { return peerAddr(c.Stream.Conn().LocalPeer()) }
func (c *streamConn) RemoteAddr() net.Addr { return peerAddr(c.Stream.Conn().RemotePeer()) }
