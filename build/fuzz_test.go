package build

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"testing"

	"github.com/hubmesh/hubmesh"
)

// FuzzParseRule: any rule text either parses into a rule that formats back
// to itself, or fails with ErrInvalid; a parsed rule applied to any ref
// name renders only valid tags, or a clear error.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"branch:main=>latest", `tag:/^v([0-9.]+)$/=>{\1}`, `branch:/^(feat)-(.*)$/=>{\2}-{\1}`,
		"tag:/x=>y/=>{sourceref}", "branch:", ":", "branch:/(/=>x", `tag:/^release-([0-9]+)\.([0-9]+)$/=>{\1}.{\2}`} {
		f.Add(s, "main", true)
		f.Add(s, "v1.2.3", false)
	}
	f.Fuzz(func(t *testing.T, s, name string, branch bool) {
		r, err := ParseRule(s)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("ParseRule(%q): %v, not ErrInvalid", s, err)
			}
			return
		}
		again, err := ParseRule(r.String())
		if err != nil || again.String() != r.String() {
			t.Fatalf("ParseRule(%q).String() = %q parses to %q, %v", s, r.String(), again.String(), err)
		}
		st := SourceTag
		if branch {
			st = SourceBranch
		}
		tg, ok, err := r.Apply(st, name)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("Apply(%q) of %q: %v, not ErrInvalid", name, s, err)
			}
			return
		}
		if !ok {
			return
		}
		if len(tg.Tags) == 0 {
			t.Fatalf("Apply(%q) of %q matched with no tag", name, s)
		}
		for _, tag := range tg.Tags {
			if !ValidTag(tag) {
				t.Fatalf("Apply(%q) of %q rendered tag %q", name, s, tag)
			}
		}
	})
}

// FuzzParseWebhook: any body under a valid signature either parses into a
// push of a branch or tag at a hex commit, asks for nothing (nil, nil), or
// fails with ErrInvalid; nothing panics.
func FuzzParseWebhook(f *testing.F) {
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"clone_url":"https://x/y.git"}}`), 0)
	f.Add("Push Hook", []byte(`{"ref":"refs/tags/v1","checkout_sha":"0123456789abcdef0123456789abcdef01234567","repository":{"git_http_url":"https://x/y.git"}}`), 2)
	f.Add("ping", []byte(`{}`), 1)
	f.Add("push", []byte(`{"ref":"refs/heads/../x","after":"zz"}`), 1)
	secret := []byte("s3cret")
	f.Fuzz(func(t *testing.T, event string, body []byte, host int) {
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		sig := hex.EncodeToString(mac.Sum(nil))
		h := http.Header{}
		switch host % 3 {
		case 0:
			h.Set("X-GitHub-Event", event)
			h.Set("X-Hub-Signature-256", "sha256="+sig)
		case 1:
			h.Set("X-Gitea-Event", event)
			h.Set("X-Gitea-Signature", sig)
		default:
			h.Set("X-Gitlab-Event", event)
			h.Set("X-Gitlab-Token", string(secret))
		}
		p, err := ParseWebhook(h, body, secret)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("signed %q body %q: %v, not ErrInvalid", event, body, err)
			}
			return
		}
		if p == nil {
			return
		}
		if p.SourceType != SourceBranch && p.SourceType != SourceTag || p.SourceName == "" || !isObjectName(p.Commit) {
			t.Fatalf("signed %q body %q: push %+v", event, body, p)
		}
	})
}
