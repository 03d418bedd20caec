package node

import (
	"strings"
	"testing"
	"time"
)

func TestUpstreamConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"none", func(c *Config) {}, ""},
		{"one", func(c *Config) { c.Upstreams = []string{"docker.io=https://registry-1.docker.io"} }, ""},
		{"no url", func(c *Config) { c.Upstreams = []string{"docker.io"} }, "want NAME=URL"},
		{"bad url", func(c *Config) { c.Upstreams = []string{"hub=ftp://x"} }, "want http(s)"},
		{"slash in name", func(c *Config) { c.Upstreams = []string{"a/b=http://x"} }, "want NAME=URL"},
		{"twice", func(c *Config) { c.Upstreams = []string{"a=http://x", "a=http://y"} }, "given twice"},
		{"creds alone", func(c *Config) { c.UpstreamCredentialsFile = "/x" }, "without --upstream"},
		{"ttl", func(c *Config) { c.UpstreamTTL = 0 }, "upstream-ttl"},
		{"ttl ok", func(c *Config) { c.UpstreamTTL = time.Second }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(&c)
			err := c.Validate()
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestUpstreamRoute(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Upstreams = []string{"ghcr.io=https://ghcr.io", "docker.io=https://registry-1.docker.io"}
	u, err := newUpstreams(c, nil, nil, t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ repo, upstream, name string }{
		{"library/alpine", "docker.io", "library/alpine"},
		{"alpine", "docker.io", "library/alpine"},
		{"docker.io/library/alpine", "docker.io", "library/alpine"},
		{"docker.io/alpine", "docker.io", "library/alpine"},
		{"ghcr.io/acme/tool", "ghcr.io", "acme/tool"},
		{"acme/tool", "docker.io", "acme/tool"},
	}
	for _, tt := range tests {
		cl, name := u.route(tt.repo)
		if cl.Name() != tt.upstream || name != tt.name {
			t.Errorf("route(%q) = %s %q, want %s %q", tt.repo, cl.Name(), name, tt.upstream, tt.name)
		}
	}
}
