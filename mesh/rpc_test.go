package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

const (
	tcpLoopback  = "/ip4/127.0.0.1/tcp/0"
	quicLoopback = "/ip4/127.0.0.1/udp/0/quic-v1"
	testProto    = "/hubmesh/test/1.0.0"
)

// newMembers starts hosts on listen that are members of each other and
// know each other's addresses.
func newMembers(t *testing.T, n int, listen string) []*Host {
	t.Helper()
	hosts := make([]*Host, n)
	ids := make([]string, n)
	for i := range hosts {
		hosts[i] = newTestHost(t, t.TempDir(), listen)
		ids[i] = hosts[i].ID()
	}
	for _, h := range hosts {
		h.SetMembers(ids)
		for _, o := range hosts {
			if _, err := h.AddAddrs(o.Addrs()...); err != nil {
				t.Fatal(err)
			}
		}
	}
	return hosts
}

// callCtx bounds one call in a test.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRPCRoundTrip(t *testing.T) {
	for _, tr := range []string{tcpLoopback, quicLoopback} {
		t.Run(tr, func(t *testing.T) {
			hs := newMembers(t, 2, tr)
			a, b := hs[0], hs[1]
			b.Handle(testProto, func(ctx context.Context, from string, req []byte) ([]byte, error) {
				return fmt.Appendf(nil, "%s says %s", from, req), nil
			})
			// Concurrent calls, one stream each, answers matched to requests.
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					req := "hello " + strconv.Itoa(i)
					got, err := a.Call(callCtx(t), b.ID(), testProto, []byte(req))
					if err != nil {
						t.Errorf("Call %d: %v", i, err)
						return
					}
					if want := a.ID() + " says " + req; string(got) != want {
						t.Errorf("Call %d = %q, want %q", i, got, want)
					}
				})
			}
			wg.Wait()

			// Empty request and response.
			b.Handle(testProto, func(ctx context.Context, from string, req []byte) ([]byte, error) {
				if len(req) != 0 {
					return nil, fmt.Errorf("got %d bytes: %w", len(req), hubmesh.ErrInvalid)
				}
				return nil, nil
			})
			if got, err := a.Call(callCtx(t), b.ID(), testProto, nil); err != nil || len(got) != 0 {
				t.Errorf("empty Call = %q, %v; want empty, nil", got, err)
			}

			// Unregistered: the protocol is no longer served.
			b.Handle(testProto, nil)
			if _, err := a.Call(callCtx(t), b.ID(), testProto, nil); !errors.Is(err, ErrUnsupportedProtocol) || !errors.Is(err, hubmesh.ErrUnavailable) {
				t.Errorf("Call after Handle(nil): err = %v, want ErrUnsupportedProtocol", err)
			}
		})
	}
}

func TestRPCBigPayload(t *testing.T) {
	hs := newMembers(t, 2, tcpLoopback)
	a, b := hs[0], hs[1]
	b.Handle(testProto, func(ctx context.Context, from string, req []byte) ([]byte, error) {
		if len(req) == 1 { // asks for an oversized response
			return make([]byte, MaxFrameSize+1), nil
		}
		return bytes.ToUpper(req), nil
	})
	req := bytes.Repeat([]byte("layer-bytes-"), (5<<20)/12+1) // > 5 MiB
	got, err := a.Call(callCtx(t), b.ID(), testProto, req)
	if err != nil {
		t.Fatalf("Call with %d bytes: %v", len(req), err)
	}
	if !bytes.Equal(got, bytes.ToUpper(req)) {
		t.Fatalf("response of %d bytes differs from the expected %d bytes", len(got), len(req))
	}

	// Oversized request: refused before anything is sent.
	if _, err := a.Call(callCtx(t), b.ID(), testProto, make([]byte, MaxFrameSize+1)); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("Call with %d bytes: err = %v, want ErrInvalid", MaxFrameSize+1, err)
	}
	// Exactly the limit goes through.
	if got, err := a.Call(callCtx(t), b.ID(), testProto, make([]byte, MaxFrameSize)); err != nil || len(got) != MaxFrameSize {
		t.Errorf("Call with MaxFrameSize bytes = %d bytes, %v", len(got), err)
	}
	// Oversized response: the caller gets the handler side's error.
	_, err = a.Call(callCtx(t), b.ID(), testProto, []byte{1})
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized response: err = %v, want a RemoteError about the limit", err)
	}
}

func TestRPCErrorsCrossTheWire(t *testing.T) {
	roots := []error{hubmesh.ErrNotFound, hubmesh.ErrExists, hubmesh.ErrInvalid, hubmesh.ErrDenied, hubmesh.ErrNotLeader, hubmesh.ErrUnavailable}
	kinds := []error{
		hubmesh.ErrRepoUnknown, hubmesh.ErrManifestUnknown, hubmesh.ErrBlobUnknown, hubmesh.ErrUploadUnknown,
		hubmesh.ErrManifestBlobUnknown, hubmesh.ErrDigestMismatch, hubmesh.ErrRangeInvalid, hubmesh.ErrSizeInvalid,
	}
	all := append(append([]error{}, roots...), kinds...)
	type tc struct {
		name string
		err  error   // what the handler returns
		want []error // every hubmesh error the caller's error must match; all others must not match
	}
	var cases []tc
	for _, e := range roots {
		cases = append(cases, tc{e.Error(), fmt.Errorf("resolve app:v1: %w", e), []error{e}})
	}
	for _, e := range kinds {
		var root error
		for _, r := range roots {
			if errors.Is(e, r) {
				root = r
			}
		}
		cases = append(cases, tc{e.Error(), fmt.Errorf("resolve app:v1: %w", e), []error{e, root}})
	}
	cases = append(cases,
		tc{"two roots", errors.Join(hubmesh.ErrNotLeader, fmt.Errorf("no quorum: %w", hubmesh.ErrUnavailable)), []error{hubmesh.ErrNotLeader, hubmesh.ErrUnavailable}},
		tc{"member refused", fmt.Errorf("apply: %w", ErrNotMember), []error{hubmesh.ErrDenied}},
		tc{"plain", errors.New("disk on fire"), nil},
		tc{"handler timeout", fmt.Errorf("apply: %w", context.DeadlineExceeded), []error{hubmesh.ErrUnavailable}},
	)

	hs := newMembers(t, 2, tcpLoopback)
	a, b := hs[0], hs[1]
	b.Handle(testProto, func(ctx context.Context, from string, req []byte) ([]byte, error) {
		i, err := strconv.Atoi(string(req))
		if err != nil || i < 0 || i >= len(cases) {
			return nil, fmt.Errorf("bad case %q: %w", req, hubmesh.ErrInvalid)
		}
		return nil, cases[i].err
	})
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := a.Call(callCtx(t), b.ID(), testProto, []byte(strconv.Itoa(i)))
			if err == nil {
				t.Fatal("Call succeeded, want the handler's error")
			}
			if err.Error() != c.err.Error() {
				t.Errorf("error text = %q, want the handler's %q", err, c.err)
			}
			var re *RemoteError
			if !errors.As(err, &re) || re.Peer != b.ID() || re.Protocol != testProto {
				t.Errorf("error %#v is not a RemoteError from %s on %s", err, b.ID(), testProto)
			}
			for _, e := range all {
				want := false
				for _, w := range c.want {
					if e == w {
						want = true
					}
				}
				if got := errors.Is(err, e); got != want {
					t.Errorf("errors.Is(err, %q) = %v, want %v", e, got, want)
				}
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				t.Error("a remote error matches a context error of the caller")
			}
		})
	}
}

func TestRPCHandlerCancelledWhenCallerGoesAway(t *testing.T) {
	for _, tr := range []string{tcpLoopback, quicLoopback} {
		t.Run(tr, func(t *testing.T) {
			hs := newMembers(t, 2, tr)
			a, b := hs[0], hs[1]
			started := make(chan struct{}, 1)
			cancelled := make(chan error, 1)
			b.Handle(testProto, func(ctx context.Context, from string, req []byte) ([]byte, error) {
				started <- struct{}{}
				select {
				case <-ctx.Done():
					cancelled <- ctx.Err()
					return nil, ctx.Err()
				case <-time.After(30 * time.Second):
					cancelled <- errors.New("handler context not cancelled within 30s")
					return []byte("late"), nil
				}
			})

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := a.Call(ctx, b.ID(), testProto, []byte("wait"))
				errc <- err
			}()
			wait := func(what string) {
				t.Helper()
				select {
				case <-started:
				case <-time.After(20 * time.Second):
					t.Fatalf("%s: handler did not start within 20s", what)
				}
			}
			wait("cancel")
			cancel()
			select {
			case err := <-errc:
				if !errors.Is(err, hubmesh.ErrUnavailable) || !errors.Is(err, context.Canceled) {
					t.Errorf("cancelled Call: err = %v, want ErrUnavailable and context.Canceled", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("cancelled Call did not return within 20s")
			}
			if err := <-cancelled; !errors.Is(err, context.Canceled) {
				t.Errorf("handler: %v", err)
			}

			// A deadline on the caller's ctx ends the call the same way.
			dctx, dcancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer dcancel()
			_, err := a.Call(dctx, b.ID(), testProto, []byte("wait"))
			if !errors.Is(err, hubmesh.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Call past its deadline: err = %v, want ErrUnavailable and DeadlineExceeded", err)
			}
			select {
			case <-started:
				select {
				case err := <-cancelled:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("handler after the caller's deadline: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Error("handler not cancelled within 20s of the caller's deadline")
				}
			default:
				t.Log("the request did not reach the handler before the deadline")
			}
		})
	}
}

func TestRPCPeerClosesDuringCall(t *testing.T) {
	hs := newMembers(t, 2, tcpLoopback)
	a, b := hs[0], hs[1]
	started := make(chan struct{})
	b.Handle(testProto, func(ctx context.Context, from string, req []byte) ([]byte, error) {
		close(started)
		<-ctx.Done() // Close cancels handlers, then waits for them
		return nil, ctx.Err()
	})
	errc := make(chan error, 1)
	go func() {
		_, err := a.Call(callCtx(t), b.ID(), testProto, nil)
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("handler did not start within 20s")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Errorf("Call to a host that closed: err = %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Call did not return within 20s of the peer closing")
	}
	// And a closed peer cannot be reached at all.
	if _, err := a.Call(callCtx(t), b.ID(), testProto, nil); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Errorf("Call to a closed host: err = %v, want ErrUnavailable", err)
	}
}

func TestRPCCallRejects(t *testing.T) {
	hs := newMembers(t, 2, tcpLoopback)
	a, b := hs[0], hs[1]
	stranger := newTestHost(t, t.TempDir(), tcpLoopback)
	if _, err := a.AddAddrs(stranger.Addrs()...); err != nil {
		t.Fatal(err)
	}
	noAddrs := newTestHost(t, t.TempDir(), tcpLoopback)
	a.SetMembers([]string{a.ID(), b.ID(), noAddrs.ID()})

	done, cancel := context.WithCancel(t.Context())
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		peer string
		want []error
	}{
		{"bad peer id", t.Context(), "not-a-peer", []error{hubmesh.ErrInvalid}},
		{"self", t.Context(), a.ID(), []error{hubmesh.ErrInvalid}},
		{"not a member", t.Context(), stranger.ID(), []error{ErrNotMember, hubmesh.ErrDenied}},
		{"member without addresses", callCtx(t), noAddrs.ID(), []error{hubmesh.ErrUnavailable}},
		{"ended context", done, b.ID(), []error{hubmesh.ErrUnavailable, context.Canceled}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := a.Call(c.ctx, c.peer, testProto, nil)
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("Call: err = %v, want one matching %q", err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), testProto) {
				t.Errorf("error %q does not name the protocol", err)
			}
		})
	}
}
