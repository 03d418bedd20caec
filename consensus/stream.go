package consensus

import (
	"net"
	"sync"

	"github.com/hashicorp/raft"
)

// trackedStream wraps the configured stream layer to remember the inbound
// connections it accepted. raft's NetworkTransport does not close them on
// shutdown (their handlers block until the peer hangs up), so Node.Close
// closes them itself.
type trackedStream struct {
	raft.StreamLayer

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

func newTrackedStream(s raft.StreamLayer) *trackedStream {
	return &trackedStream{StreamLayer: s, conns: map[*trackedConn]struct{}{}}
}

// Accept implements net.Listener.
func (s *trackedStream) Accept() (net.Conn, error) {
	c, err := s.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// closeAccepted closes every accepted connection still open and refuses
// new ones.
func (s *trackedStream) closeAccepted() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	s *trackedStream
}

// Close implements net.Conn.
func (c *trackedConn) Close() error {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}
