package build

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/net/proxy"
)

// maxRefusalBody is the most bytes read of a git server's error answer.
// go-git copies the whole body of a 4xx or 5xx answer into its error, which
// becomes a build's message: unbounded, a hostile server could fill the
// builder's memory, and a long page would end up in the build record.
const maxRefusalBody = 4 << 10

func init() {
	c := githttp.NewClientWithOptions(&http.Client{Transport: cappedTransport{http.DefaultTransport}},
		&githttp.ClientOptions{CacheMaxEntries: 16})
	client.InstallProtocol("http", c)
	client.InstallProtocol("https", c)
}

// cappedTransport cuts the bodies of error answers to maxRefusalBody.
type cappedTransport struct{ rt http.RoundTripper }

func (c cappedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil && resp.StatusCode >= http.StatusBadRequest {
		resp.Body = cappedBody{Reader: io.LimitReader(resp.Body, maxRefusalBody), c: resp.Body}
	}
	return resp, err
}

type cappedBody struct {
	io.Reader
	c io.Closer
}

func (b cappedBody) Close() error { return b.c.Close() }

// Host is the host name the source is fetched from ("" for a local
// source or a URL that does not parse): the API applies the node's egress
// policy to it.
func (s Source) Host() string {
	k, _, err := s.kind()
	if err != nil || k == kindLocal {
		return ""
	}
	ep, err := transport.NewEndpoint(strings.TrimSpace(s.URL))
	if err != nil {
		return ""
	}
	return strings.Trim(ep.Host, "[]")
}

// go-git's ssh transport dials and runs the ssh handshake without a
// context: a server that accepts the connection and then stays silent
// would hold a checkout (and its build) forever. Fetches from ssh sources
// therefore dial through a "proxy" of the scheme ctxDialScheme, which
// x/net/proxy resolves to ctxDialer: a direct dial whose connection is
// closed when the context of the fetch ends, which unblocks go-git
// wherever it waits. The proxy URL's host names the registered context.
const ctxDialScheme = "hubmesh-ctx"

var ctxDials = struct {
	sync.Mutex
	next uint64
	m    map[string]context.Context
}{m: map[string]context.Context{}}

func init() {
	proxy.RegisterDialerType(ctxDialScheme, func(u *neturl.URL, _ proxy.Dialer) (proxy.Dialer, error) {
		ctxDials.Lock()
		ctx, ok := ctxDials.m[u.Host]
		ctxDials.Unlock()
		if !ok {
			return nil, fmt.Errorf("ssh dial: no fetch registered as %q", u.Host)
		}
		return ctxDialer{ctx: ctx}, nil
	})
}

// sshDialOptions registers ctx for the dials of one fetch from an ssh
// source and returns the proxy options naming it; release unregisters it.
func sshDialOptions(ctx context.Context, k sourceKind) (opts transport.ProxyOptions, release func()) {
	if k != kindSSH {
		return transport.ProxyOptions{}, func() {}
	}
	ctxDials.Lock()
	ctxDials.next++
	id := strconv.FormatUint(ctxDials.next, 10)
	ctxDials.m[id] = ctx
	ctxDials.Unlock()
	return transport.ProxyOptions{URL: ctxDialScheme + "://" + id}, func() {
		ctxDials.Lock()
		delete(ctxDials.m, id)
		ctxDials.Unlock()
	}
}

// ctxDialer dials directly; its connections close when ctx ends.
type ctxDialer struct{ ctx context.Context }

func (d ctxDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d ctxDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopDial := context.AfterFunc(d.ctx, cancel)
	defer stopDial()
	var nd net.Dialer
	c, err := nd.DialContext(dctx, network, addr)
	if err != nil {
		if d.ctx.Err() != nil {
			return nil, d.ctx.Err()
		}
		return nil, err
	}
	stop := context.AfterFunc(d.ctx, func() { c.Close() })
	return &ctxConn{Conn: c, stop: stop}, nil
}

// ctxConn stops watching the context when it is closed.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
