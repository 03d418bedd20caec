package regclient

import "net/http"

// BasicAuth wraps rt so that every request carries Basic credentials of
// user: how the benchmarks authenticate to a hubmesh node, which refuses
// anonymous pushes. Requests that already carry an Authorization header
// are sent as they are. A registry without authentication (CNCF
// distribution as configured by the benchmarks) ignores the header.
func BasicAuth(rt http.RoundTripper, user, password string) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &basicAuth{next: rt, user: user, password: password}
}

type basicAuth struct {
	next           http.RoundTripper
	user, password string
}

// RoundTrip implements http.RoundTripper; per its contract it does not
// modify req but sends a clone with the header set.
func (b *basicAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" {
		return b.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.SetBasicAuth(b.user, b.password)
	return b.next.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport, so that Client.Close still drops them.
func (b *basicAuth) CloseIdleConnections() {
	if c, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
