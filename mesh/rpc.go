package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"github.com/hubmesh/hubmesh"
)

// Request/response RPC over libp2p: one stream per call, on the protocol
// the handler was registered for.
//
//	caller  -> handler: frame(request payload)
//	handler -> caller:  frame(status byte || rest)
//	    status 0 (ok):    rest = response payload
//	    status 1 (error): rest = n (1 byte) || n error codes (1 byte each) || message (UTF-8)
//	frame = length (uint32, big endian) || body
//
// The caller keeps its write side open until it has read the response:
// the handler takes the stream ending early (reset, half-close, lost
// connection) as the caller going away, and cancels the handler's context.
//
// Error codes name the hubmesh errors an error matched (errors.Is); they
// are append-only and never reused. A code this binary does not know is
// ignored, so an error from a newer peer still matches its root sentinel.

// MaxFrameSize is the largest request or response payload of an RPC:
// 16 MiB. Larger payloads are refused before anything is sent.
const MaxFrameSize = 16 << 20

const (
	// maxErrorMessage bounds the error text carried back to the caller.
	maxErrorMessage = 64 << 10
	// maxResponseBody bounds a response frame: payload, or error header
	// and message.
	maxResponseBody = 1 + MaxFrameSize
	// rpcRequestTimeout bounds how long a handler waits for the request
	// frame to arrive; rpcResponseTimeout bounds writing the response.
	// Neither depends on the caller: a stalled caller must not pin a
	// handler goroutine.
	rpcRequestTimeout  = time.Minute
	rpcResponseTimeout = time.Minute

	statusOK    byte = 0
	statusError byte = 1
)

// errorCodes is the wire table of errors that cross an RPC. Specific
// errors first, so that the caller's error lists them before their roots.
var errorCodes = []struct {
	code byte
	err  error
}{
	{7, hubmesh.ErrRepoUnknown},
	{8, hubmesh.ErrManifestUnknown},
	{9, hubmesh.ErrBlobUnknown},
	{10, hubmesh.ErrUploadUnknown},
	{11, hubmesh.ErrManifestBlobUnknown},
	{12, hubmesh.ErrDigestMismatch},
	{13, hubmesh.ErrRangeInvalid},
	{14, hubmesh.ErrSizeInvalid},
	{1, hubmesh.ErrNotFound},
	{2, hubmesh.ErrExists},
	{3, hubmesh.ErrInvalid},
	{4, hubmesh.ErrDenied},
	{5, hubmesh.ErrNotLeader},
	{6, hubmesh.ErrUnavailable},
}

// ErrUnsupportedProtocol is matched (errors.Is) by the error of a Call to
// a peer that has no handler for the protocol. It wraps
// hubmesh.ErrUnavailable: the peer may be running an older version, or
// not have started that service yet.
var ErrUnsupportedProtocol = fmt.Errorf("peer does not serve the protocol: %w", hubmesh.ErrUnavailable)

// Handler serves one RPC: from is the caller's peer ID, req the request
// payload. The returned payload (at most MaxFrameSize bytes) or error goes
// back to the caller; an error reaches the caller as a *RemoteError that
// matches the same hubmesh errors. ctx ends when the caller goes away or
// the host closes.
type Handler func(ctx context.Context, from string, req []byte) ([]byte, error)

// RemoteError is the error a peer's handler returned, as Call reports it.
// It matches (errors.Is) every hubmesh sentinel and specific error the
// handler's error matched, and its text is the handler's error text.
type RemoteError struct {
	// Peer is the peer ID of the handler's host.
	Peer string
	// Protocol is the protocol called.
	Protocol string
	// Message is the text of the handler's error (at most 64 KiB).
	Message string

	kinds []error
}

// Error returns the handler's error text.
func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the hubmesh errors the handler's error matched.
func (e *RemoteError) Unwrap() []error { return e.kinds }

// Handle serves protocol (such as "/hubmesh/consensus/1.0.0") with fn,
// replacing an earlier handler; a nil fn stops serving it. Only streams
// from allowed peers reach fn.
func (h *Host) Handle(proto string, fn Handler) {
	pid := protocol.ID(proto)
	if fn == nil {
		h.h.RemoveStreamHandler(pid)
		return
	}
	h.h.SetStreamHandler(pid, func(s network.Stream) { h.serveRPC(proto, fn, s) })
}

// Call sends req to the handler of protocol on peerID over a new stream
// and returns its response. ctx bounds the whole call, dialing included;
// when it ends the stream is reset and the handler's context cancelled.
//
// Errors: a handler's error comes back as a *RemoteError; a peer that
// cannot be reached, a broken stream or an ended ctx wrap
// hubmesh.ErrUnavailable (and ctx's error); a protocol the peer does not
// serve matches ErrUnsupportedProtocol; a peer that is not a member or
// admitted matches ErrNotMember; a bad peer ID, a call to this host itself
// or a request over MaxFrameSize wrap hubmesh.ErrInvalid.
func (h *Host) Call(ctx context.Context, peerID, proto string, req []byte) ([]byte, error) {
	id, err := parsePeerID(peerID)
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", proto, err)
	}
	if id == h.h.ID() {
		return nil, fmt.Errorf("call %s: peer %s is this host: %w", proto, peerID, hubmesh.ErrInvalid)
	}
	if len(req) > MaxFrameSize {
		return nil, fmt.Errorf("call %s on %s: request of %d bytes exceeds the %d byte limit: %w", proto, peerID, len(req), MaxFrameSize, hubmesh.ErrInvalid)
	}
	if !h.gater.allowed(id) {
		return nil, fmt.Errorf("call %s on %s: %w", proto, peerID, ErrNotMember)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("call %s on %s: %w: %w", proto, peerID, hubmesh.ErrUnavailable, err)
	}
	s, err := h.h.NewStream(memberDial(ctx), id, protocol.ID(proto))
	if err != nil {
		return nil, callError(ctx, peerID, proto, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeFrame(s, req); err != nil {
		_ = s.Reset()
		return nil, callError(ctx, peerID, proto, err)
	}
	body, err := readFrame(s, maxResponseBody)
	if err != nil {
		_ = s.Reset()
		return nil, callError(ctx, peerID, proto, err)
	}
	_ = s.Close()
	resp, err := decodeResponse(body)
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) {
			re.Peer, re.Protocol = peerID, proto
			return nil, re
		}
		return nil, fmt.Errorf("call %s on %s: %w", proto, peerID, err)
	}
	return resp, nil
}

// callError classifies a transport failure of a call.
func callError(ctx context.Context, peerID, proto string, err error) error {
	// Negotiated up front, the peer answers "na"; negotiated lazily (the
	// peer listed the protocol earlier), it resets the stream.
	var serr *network.StreamError
	if errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) || errors.Is(err, msmux.ErrNotSupported[string]{}) ||
		(errors.As(err, &serr) && serr.Remote && serr.ErrorCode == network.StreamProtocolNegotiationFailed) {
		return fmt.Errorf("call %s on %s: %w", proto, peerID, ErrUnsupportedProtocol)
	}
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded // the stream deadline (ctx's) fired a moment before ctx did
	}
	if cerr != nil {
		return fmt.Errorf("call %s on %s: %w: %w", proto, peerID, hubmesh.ErrUnavailable, cerr)
	}
	return fmt.Errorf("call %s on %s: %v: %w", proto, peerID, err, hubmesh.ErrUnavailable)
}

// serveRPC runs fn for one inbound stream.
func (h *Host) serveRPC(proto string, fn Handler, s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !h.gater.allowed(remote) { // the gater closes such connections; this closes the race
		h.logger.Warn("rpc from a peer that is not admitted refused", "peer", remote.String(), "protocol", proto)
		_ = s.Reset()
		return
	}
	if !h.track() {
		_ = s.Reset()
		return
	}
	defer h.wg.Done()

	_ = s.SetReadDeadline(time.Now().Add(rpcRequestTimeout))
	req, err := readFrame(s, MaxFrameSize)
	if err != nil {
		h.logger.Debug("rpc request not received", "peer", remote.String(), "protocol", proto, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		// The caller sends nothing more: any return means it went away
		// (or that the stream is being closed below, after fn returned).
		defer close(watched)
		var b [1]byte
		_, _ = s.Read(b[:])
		cancel()
	}()

	resp, herr := fn(ctx, remote.String(), req)
	var body []byte
	switch {
	case herr != nil:
		body = encodeError(herr)
	case len(resp) > MaxFrameSize:
		h.logger.Error("rpc response too large", "protocol", proto, "bytes", len(resp))
		body = encodeError(fmt.Errorf("response of %d bytes exceeds the %d byte limit", len(resp), MaxFrameSize))
	default:
		body = make([]byte, 0, 1+len(resp))
		body = append(body, statusOK)
		body = append(body, resp...)
	}
	if ctx.Err() != nil {
		_ = s.Reset() // caller gone, or host closing
	} else {
		_ = s.SetWriteDeadline(time.Now().Add(rpcResponseTimeout))
		if err := writeFrame(s, body); err != nil {
			h.logger.Debug("rpc response not sent", "peer", remote.String(), "protocol", proto, "err", err)
			_ = s.Reset()
		} else {
			_ = s.Close()
		}
	}
	<-watched
}

// track registers a running handler with Close; false if the host is
// closed.
func (h *Host) track() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// encodeError encodes a handler error as a response body.
func encodeError(err error) []byte {
	codes := make([]byte, 0, len(errorCodes))
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			codes = append(codes, c.code)
		}
	}
	if len(codes) == 0 && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The handler gave up on something of its own: to the caller the
		// service was unavailable, not its own context ending.
		codes = append(codes, codeOf(hubmesh.ErrUnavailable))
	}
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	body := make([]byte, 0, 2+len(codes)+len(msg))
	body = append(body, statusError, byte(len(codes)))
	body = append(body, codes...)
	return append(body, msg...)
}

func codeOf(err error) byte {
	for _, c := range errorCodes {
		if c.err == err {
			return c.code
		}
	}
	return 0
}

// decodeResponse returns the payload of an ok response, or a *RemoteError
// for an error response.
func decodeResponse(body []byte) ([]byte, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("empty response frame: %w", hubmesh.ErrUnavailable)
	}
	switch body[0] {
	case statusOK:
		return body[1:], nil
	case statusError:
		if len(body) < 2 || len(body) < 2+int(body[1]) {
			return nil, fmt.Errorf("truncated error response: %w", hubmesh.ErrUnavailable)
		}
		n := int(body[1])
		re := &RemoteError{Message: string(body[2+n:])}
		for _, code := range body[2 : 2+n] {
			for _, c := range errorCodes {
				if c.code == code {
					re.kinds = append(re.kinds, c.err)
				}
			}
		}
		return nil, re
	default:
		return nil, fmt.Errorf("response status %d unknown: %w", body[0], hubmesh.ErrUnavailable)
	}
}

// writeFrame writes one length-prefixed frame.
func writeFrame(w io.Writer, body []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	_, err := w.Write(body)
	return err
}

// readFrame reads one length-prefixed frame of at most limit bytes.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("frame of %d bytes exceeds the %d byte limit", n, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("frame of %d bytes: %w", n, err)
	}
	return body, nil
}
