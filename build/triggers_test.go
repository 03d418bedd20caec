package build

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

const sha1a = "0123456789abcdef0123456789abcdef01234567"

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestParseWebhook(t *testing.T) {
	t.Parallel()
	const secret = "s3cret"
	ghPush := `{"ref":"refs/heads/main","after":"` + sha1a + `","repository":{"clone_url":"https://github.com/acme/api.git"}}`
	ghTag := `{"ref":"refs/tags/v1.2.3","after":"` + strings.ToUpper(sha1a) + `","repository":{"clone_url":"https://github.com/acme/api.git"}}`
	ghDelete := `{"ref":"refs/heads/old","after":"0000000000000000000000000000000000000000","deleted":true}`
	glPush := `{"object_kind":"push","ref":"refs/heads/dev","checkout_sha":"` + sha1a + `","project":{"git_http_url":"https://gitlab.com/acme/api.git"}}`
	glTag := `{"object_kind":"tag_push","ref":"refs/tags/v2","checkout_sha":"` + sha1a + `","repository":{"git_http_url":"https://gitlab.com/acme/api.git"}}`
	glDelete := `{"object_kind":"push","ref":"refs/heads/dev","checkout_sha":null}`
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name    string
		h       http.Header
		body    string
		secret  string
		want    *Push
		wantErr error
		errText string
	}{
		{name: "github push", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, ghPush)), body: ghPush,
			want: &Push{Provider: GitHub, SourceType: SourceBranch, SourceName: "main", Commit: sha1a, CloneURL: "https://github.com/acme/api.git"}},
		{name: "github tag", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, ghTag)), body: ghTag,
			want: &Push{Provider: GitHub, SourceType: SourceTag, SourceName: "v1.2.3", Commit: sha1a, CloneURL: "https://github.com/acme/api.git"}},
		{name: "github ping", h: hdr("X-GitHub-Event", "ping", "X-Hub-Signature-256", "sha256="+sign(secret, `{"zen":"x"}`)), body: `{"zen":"x"}`},
		{name: "github branch deleted", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, ghDelete)), body: ghDelete},
		{name: "github wrong signature", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign("other", ghPush)), body: ghPush,
			wantErr: hubmesh.ErrDenied, errText: "does not match"},
		{name: "github body tampered", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, ghPush)), body: ghPush + " ",
			wantErr: hubmesh.ErrDenied, errText: "does not match"},
		{name: "github sha1 only", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature", "sha1=abc"), body: ghPush,
			wantErr: hubmesh.ErrDenied, errText: "X-Hub-Signature-256: signature missing"},
		{name: "github no prefix", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign(secret, ghPush)), body: ghPush,
			wantErr: hubmesh.ErrDenied, errText: `start with "sha256="`},
		{name: "github no secret configured", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign("", ghPush)), body: ghPush, secret: "-",
			wantErr: hubmesh.ErrDenied, errText: "no secret configured"},
		{name: "github bad json", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, "{")), body: "{",
			wantErr: hubmesh.ErrInvalid, errText: "not the expected JSON"},
		{name: "github bad commit", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, `{"ref":"refs/heads/main","after":"xyz"}`)),
			body: `{"ref":"refs/heads/main","after":"xyz"}`, wantErr: hubmesh.ErrInvalid, errText: "not a hex object name"},
		{name: "github other ref", h: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+sign(secret, `{"ref":"refs/notes/x","after":"`+sha1a+`"}`)),
			body: `{"ref":"refs/notes/x","after":"` + sha1a + `"}`},
		{name: "gitea push", h: hdr("X-Gitea-Event", "push", "X-GitHub-Event", "push", "X-Gitea-Signature", sign(secret, ghPush)), body: ghPush,
			want: &Push{Provider: Gitea, SourceType: SourceBranch, SourceName: "main", Commit: sha1a, CloneURL: "https://github.com/acme/api.git"}},
		{name: "forgejo push", h: hdr("X-Forgejo-Event", "push", "X-Forgejo-Signature", sign(secret, ghTag)), body: ghTag,
			want: &Push{Provider: Gitea, SourceType: SourceTag, SourceName: "v1.2.3", Commit: sha1a, CloneURL: "https://github.com/acme/api.git"}},
		{name: "gitea wrong signature", h: hdr("X-Gitea-Event", "push", "X-Gitea-Signature", sign("x", ghPush)), body: ghPush,
			wantErr: hubmesh.ErrDenied, errText: "X-Gitea-Signature"},
		{name: "gitea signature not hex", h: hdr("X-Gitea-Event", "push", "X-Gitea-Signature", "zz"), body: ghPush,
			wantErr: hubmesh.ErrDenied, errText: "not hex"},
		{name: "gitlab push", h: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", secret), body: glPush,
			want: &Push{Provider: GitLab, SourceType: SourceBranch, SourceName: "dev", Commit: sha1a, CloneURL: "https://gitlab.com/acme/api.git"}},
		{name: "gitlab tag", h: hdr("X-Gitlab-Event", "Tag Push Hook", "X-Gitlab-Token", secret), body: glTag,
			want: &Push{Provider: GitLab, SourceType: SourceTag, SourceName: "v2", Commit: sha1a, CloneURL: "https://gitlab.com/acme/api.git"}},
		{name: "gitlab delete", h: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", secret), body: glDelete},
		{name: "gitlab merge request", h: hdr("X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", secret), body: `{}`},
		{name: "gitlab wrong token", h: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", secret+"x"), body: glPush,
			wantErr: hubmesh.ErrDenied, errText: "X-Gitlab-Token"},
		{name: "gitlab no token", h: hdr("X-Gitlab-Event", "Push Hook"), body: glPush, wantErr: hubmesh.ErrDenied},
		{name: "unknown host", h: hdr("X-Other-Event", "push"), body: ghPush, wantErr: hubmesh.ErrInvalid, errText: "X-GitHub-Event"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := secret
			if tc.secret == "-" {
				s = ""
			}
			r := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(tc.body))
			r.Header = tc.h
			got, err := ParseWebhookRequest(r, []byte(s))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("got %+v, %v; want %v containing %q", got, err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestReadBodyLimit(t *testing.T) {
	t.Parallel()
	if _, err := ReadBody(bytes.NewReader(make([]byte, 11)), 10); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("11 bytes with limit 10: %v, want ErrInvalid", err)
	}
	if b, err := ReadBody(bytes.NewReader(make([]byte, 10)), 10); err != nil || len(b) != 10 {
		t.Fatalf("10 bytes with limit 10: %d, %v", len(b), err)
	}
}

func TestCheckToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		got, secret string
		ok          bool
	}{{"tok", "tok", true}, {"tok", "tok2", false}, {"", "tok", false}, {"", "", false}, {"tok", "", false}} {
		err := CheckToken(tc.got, []byte(tc.secret))
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, hubmesh.ErrDenied) {
			t.Errorf("CheckToken(%q, %q) = %v, want ok=%v", tc.got, tc.secret, err, tc.ok)
		}
	}
}

func TestParseTrigger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body    string
		want    TriggerRequest
		errText string
	}{
		{body: ``, want: TriggerRequest{All: true}},
		{body: `{"build": true}`, want: TriggerRequest{All: true}},
		{body: `{"source_type": "Branch", "source_name": "main"}`, want: TriggerRequest{SourceType: SourceBranch, SourceName: "main"}},
		{body: `{"source_type": "Tag", "source_name": "v1.0"}`, want: TriggerRequest{SourceType: SourceTag, SourceName: "v1.0"}},
		{body: `{"docker_tag": "latest"}`, want: TriggerRequest{DockerTag: "latest"}},
		{body: `{"build": false}`, errText: "asks for nothing"},
		{body: `{}`, errText: "asks for nothing"},
		{body: `{"source_type": "Branch"}`, errText: "go together"},
		{body: `{"source_type": "Commit", "source_name": "x"}`, errText: "want branch or tag"},
		{body: `{"source_type": "Branch", "source_name": "a b"}`, errText: "not a valid git"},
		{body: `{"docker_tag": "a/b"}`, errText: "not a valid tag"},
		{body: `{"build": true} {}`, errText: "trailing data"},
		{body: `[1]`, errText: "want {"},
	}
	for _, tc := range tests {
		got, err := ParseTrigger([]byte(tc.body))
		if tc.errText != "" {
			if !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("ParseTrigger(%s) = %+v, %v; want ErrInvalid containing %q", tc.body, got, err, tc.errText)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTrigger(%s) = %+v, %v; want %+v", tc.body, got, err, tc.want)
		}
	}
}
