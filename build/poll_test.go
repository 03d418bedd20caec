package build

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hubmesh/hubmesh"
)

func TestListRefs(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	want := map[string]string{
		"refs/heads/main": r.c2,
		"refs/tags/v1.0":  r.c1, // annotated: peeled to its commit
		"refs/tags/light": r.c1,
	}
	got, err := ListRefs(t.Context(), Source{URL: r.dir})
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("ListRefs(local) = %v, %v; want %v", got, err, want)
	}

	srv := gitHTTPServer(t, filepath.Dir(r.dir), "builder", "tok")
	src := Source{URL: srv.URL + "/" + filepath.Base(r.dir), Username: "builder", Password: "tok"}
	got, err = ListRefs(t.Context(), src)
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("ListRefs(http) = %v, %v; want %v", got, err, want)
	}

	tests := []struct {
		name string
		src  Source
		want error
	}{
		{"wrong password", Source{URL: src.URL, Username: "builder", Password: "bad"}, hubmesh.ErrDenied},
		{"missing repository", Source{URL: srv.URL + "/nope", Username: "builder", Password: "tok"}, hubmesh.ErrNotFound},
		{"not a repository", Source{URL: t.TempDir()}, hubmesh.ErrNotFound},
		{"unreachable", Source{URL: "http://127.0.0.1:1/x.git"}, hubmesh.ErrUnavailable},
		{"bad url", Source{URL: "ftp://x"}, hubmesh.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ListRefs(t.Context(), tc.src)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ListRefs = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestListRefsSSH(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	deploy := newSSHKeyPair(t)
	srv := newSSHGitServer(t, r.dir, deploy.pub)
	src := Source{URL: "ssh://git@" + srv.addr + r.dir, SSHKey: deploy.pem, HostKeyFingerprint: ssh.FingerprintSHA256(srv.hostKey)}
	want := map[string]string{
		"refs/heads/main": r.c2,
		"refs/tags/v1.0":  r.c1, // annotated: peeled to its commit
		"refs/tags/light": r.c1,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	got, err := ListRefs(ctx, src)
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("ListRefs(ssh) = %v, %v; want %v", got, err, want)
	}
	_, otherHost := testKey(t)
	bad := src
	bad.HostKeyFingerprint = ssh.FingerprintSHA256(otherHost)
	if _, err := ListRefs(ctx, bad); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("ListRefs with the wrong host key = %v, want ErrDenied", err)
	}
}
