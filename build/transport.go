package build

import (
	"io"
	"net/http"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
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
