package build

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func TestRulesOf(t *testing.T) {
	t.Parallel()
	in := []hubmesh.BuildRule{
		{SourceType: "Branch", SourceName: " main ", Tag: "latest", Autobuild: true, BuildCache: true},
		{SourceType: "tag", SourceName: `/^v([0-9.]+)$/`, Tag: `{\1}`, Dockerfile: "/docker/Dockerfile", Context: "src/"},
	}
	got, err := RulesOf(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{SourceType: SourceBranch, SourceName: "main", Tag: "latest", Dockerfile: "Dockerfile", Context: ".", Autobuild: true, BuildCache: true},
		{SourceType: SourceTag, SourceName: `/^v([0-9.]+)$/`, Tag: `{\1}`, Dockerfile: "docker/Dockerfile", Context: "src"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RulesOf:\n got %+v\nwant %+v", got, want)
	}
	// Round trip: the stored form of a normalized rule converts back to it.
	for i, r := range got {
		back, err := RulesOf([]hubmesh.BuildRule{RecordOf(r)})
		if err != nil || !reflect.DeepEqual(back[0], r) {
			t.Fatalf("rule %d round trip: %+v %v", i, back, err)
		}
	}
	if r := RecordOf(got[0]); r.SourceType != "branch" || r.Dockerfile != "Dockerfile" || !r.Autobuild || !r.BuildCache {
		t.Fatalf("RecordOf %+v", r)
	}
	if got, err := RulesOf(nil); err != nil || len(got) != 0 {
		t.Fatalf("no rules: %v %v", got, err)
	}
}

func TestRulesOfRefusesBadRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rule hubmesh.BuildRule
		want string
	}{
		{hubmesh.BuildRule{SourceType: "branch", SourceName: "/(a/", Tag: "x"}, "rule 2: build rule: source name /(a/ does not compile"},
		{hubmesh.BuildRule{SourceType: "tag", SourceName: `/(1)(2)(3)(4)(5)(6)(7)(8)(9)(10)/`, Tag: "x"}, "10 capture groups, at most 9"},
		{hubmesh.BuildRule{SourceType: "tag", SourceName: `/^v(.*)$/`, Tag: `{\2}`}, "capture group 2"},
		{hubmesh.BuildRule{SourceType: "commit", SourceName: "main"}, "want branch or tag"},
		{hubmesh.BuildRule{SourceType: "branch", SourceName: "main", Context: "../up"}, "leaves the repository"},
	} {
		_, err := RulesOf([]hubmesh.BuildRule{{SourceType: "branch", SourceName: "main"}, tc.rule})
		if !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "rule 2: ") {
			t.Errorf("%+v: got %v, want ErrInvalid with %q", tc.rule, err, tc.want)
		}
	}
}

func TestSourceOf(t *testing.T) {
	t.Parallel()
	in := hubmesh.BuildSource{
		URL: "ssh://git@example.com/acme/api.git", Username: "u", Password: "p", SSHKey: "PEM",
		SSHKeyPassphrase: "pp", HostKeyFingerprint: "SHA256:abc", InsecureIgnoreHostKey: true,
	}
	want := Source{
		URL: in.URL, Username: "u", Password: "p", SSHKey: []byte("PEM"), SSHKeyPassphrase: "pp",
		HostKeyFingerprint: "SHA256:abc", InsecureIgnoreHostKey: true,
	}
	if got := SourceOf(in); !reflect.DeepEqual(got, want) {
		t.Fatalf("SourceOf:\n got %+v\nwant %+v", got, want)
	}
	if got := SourceOf(hubmesh.BuildSource{URL: "https://example.com/a.git"}); got.SSHKey != nil {
		t.Fatalf("no key must stay nil, got %q", got.SSHKey)
	}
	for url, local := range map[string]bool{
		"/srv/git/api": true, "file:///srv/git/api": true, "https://example.com/a.git": false,
		"git@example.com:a.git": false, "": false, "relative/path": false,
	} {
		if got := (Source{URL: url}).IsLocal(); got != local {
			t.Errorf("IsLocal(%q) = %t, want %t", url, got, local)
		}
	}
}
