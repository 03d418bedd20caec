package build

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func TestParseRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Rule
		wantErr string // substring; "" means success
	}{
		{in: "branch:main=>latest", want: Rule{SourceType: SourceBranch, SourceName: "main", Tag: "latest"}},
		{in: `tag:/^v([0-9.]+)$/=>{\1}`, want: Rule{SourceType: SourceTag, SourceName: `/^v([0-9.]+)$/`, Tag: `{\1}`}},
		{in: "Branch:main", want: Rule{SourceType: SourceBranch, SourceName: "main", Tag: "{sourceref}"}},
		{in: "branch:/a=>b/=>x", want: Rule{SourceType: SourceBranch, SourceName: "/a=>b/", Tag: "x"}},
		{in: "branch:main=>latest,{sourceref}", want: Rule{SourceType: SourceBranch, SourceName: "main", Tag: "latest,{sourceref}"}},
		{in: "main=>latest", wantErr: "want TYPE:NAME=>TAG"},
		{in: "commit:main=>latest", wantErr: "want branch or tag"},
		{in: "tag:/v([0-9/=>x", wantErr: "does not compile"},
		{in: `tag:/^v(1)(2)(3)(4)(5)(6)(7)(8)(9)(10)$/=>x`, wantErr: "10 capture groups, at most 9"},
		{in: `tag:/^v(.*)$/=>{\2}`, wantErr: `names capture group 2, the source name has 1`},
		{in: `branch:main=>{\1}`, wantErr: `capture group 1, the source name has 0`},
		{in: "branch:main=>{branch}", wantErr: "unknown placeholder {branch}"},
		{in: "branch:main=>a/b", wantErr: "not allowed in a tag"},
		{in: "branch:main=>la{test", wantErr: "unmatched"},
		{in: "branch:main=>a,,b", wantErr: "empty tag"},
		{in: "branch:ma..in=>x", wantErr: "not a valid git branch or tag name"},
		{in: "branch:=>x", wantErr: "empty"},
		{in: "tag://=>x", wantErr: "empty regular expression"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRule(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, hubmesh.ErrInvalid) {
					t.Fatalf("ParseRule(%q) = %+v, %v; want ErrInvalid containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRule(%q): %v", tc.in, err)
			}
			want := tc.want
			want.Dockerfile, want.Context, want.Autobuild, want.BuildCache = "Dockerfile", ".", true, true
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseRule(%q) = %+v, want %+v", tc.in, got, want)
			}
			again, err := ParseRule(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip via %q = %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestValidatePaths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule    Rule
		wantErr bool
		df, ctx string
	}{
		{rule: Rule{Dockerfile: "docker/Dockerfile.prod", Context: "/"}, df: "docker/Dockerfile.prod", ctx: "."},
		{rule: Rule{Dockerfile: "/Dockerfile", Context: "/app/"}, df: "Dockerfile", ctx: "app"},
		{rule: Rule{Context: "a/../../b"}, wantErr: true},
		{rule: Rule{Dockerfile: "../Dockerfile"}, wantErr: true},
		{rule: Rule{Dockerfile: "."}, wantErr: true},
	}
	for _, tc := range tests {
		r := tc.rule
		r.SourceType, r.SourceName = SourceBranch, "main"
		err := r.Validate()
		if tc.wantErr != (err != nil) || err != nil && !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want error %v", r, err, tc.wantErr)
			continue
		}
		if n := r.Normalize(); !tc.wantErr && (n.Dockerfile != tc.df || n.Context != tc.ctx) {
			t.Errorf("Normalize(%+v) = %q %q, want %q %q", r, n.Dockerfile, n.Context, tc.df, tc.ctx)
		}
	}
}

func TestValidTag(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 128)
	for tag, want := range map[string]bool{
		"latest": true, "v1.2.3": true, "_x": true, "1": true, "a-b_c.d": true, long: true,
		"": false, ".x": false, "-x": false, "a/b": false, "a:b": false, long + "a": false, "é": false,
	} {
		if got := ValidTag(tag); got != want {
			t.Errorf("ValidTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

func mustRules(t *testing.T, specs ...string) []Rule {
	t.Helper()
	var rs []Rule
	for _, s := range specs {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

func TestMatch(t *testing.T) {
	t.Parallel()
	rules := mustRules(t,
		"branch:main=>latest",
		`tag:/^v([0-9]+)\.([0-9]+)\.([0-9]+)$/=>{\1}.{\2}.{\3},{\1}.{\2},{\1}`,
		`tag:/^v.*$/=>{sourceref}`,
		"branch:/^release-(.*)$/=>rel-{\\1}",
		"branch:/^feature/=>{sourceref}", // feature/x renders an invalid tag
		"branch:main=>latest,stable",     // latest already produced by rule 0
	)
	rules[1].Dockerfile, rules[1].Context, rules[1].BuildCache = "Dockerfile.release", "app", false
	rules[3].Autobuild = false
	tests := []struct {
		st   SourceType
		name string
		want []Target
	}{
		{SourceBranch, "main", []Target{
			{SourceType: SourceBranch, SourceName: "main", Tags: []string{"latest"}, Dockerfile: "Dockerfile", Context: ".", Autobuild: true, BuildCache: true, Rule: 0},
			{SourceType: SourceBranch, SourceName: "main", Tags: []string{"stable"}, Dockerfile: "Dockerfile", Context: ".", Autobuild: true, BuildCache: true, Rule: 5},
		}},
		{SourceTag, "v1.22.3", []Target{
			{SourceType: SourceTag, SourceName: "v1.22.3", Tags: []string{"1.22.3", "1.22", "1"}, Dockerfile: "Dockerfile.release", Context: "app", Autobuild: true, Rule: 1},
			{SourceType: SourceTag, SourceName: "v1.22.3", Tags: []string{"v1.22.3"}, Dockerfile: "Dockerfile", Context: ".", Autobuild: true, BuildCache: true, Rule: 2},
		}},
		{SourceBranch, "release-2024", []Target{
			{SourceType: SourceBranch, SourceName: "release-2024", Tags: []string{"rel-2024"}, Dockerfile: "Dockerfile", Context: ".", BuildCache: true, Rule: 3},
		}},
		{SourceBranch, "feature/x", nil},
		{SourceTag, "main", nil},
		{SourceBranch, "v1.0.0", nil},
	}
	for _, tc := range tests {
		got := Match(rules, tc.st, tc.name)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Match(%s %q) =\n%+v\nwant\n%+v", tc.st, tc.name, got, tc.want)
		}
	}
	if _, ok, err := rules[4].Apply(SourceBranch, "feature/x"); !ok || !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), `"feature/x"`) {
		t.Errorf("Apply(feature/x) = %v, %v; want a match with an invalid-tag error", ok, err)
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	rules := mustRules(t, "branch:main=>latest", "branch:dev=>edge,dev", `tag:/^v(.*)$/=>{\1}`)
	tests := []struct {
		req      TriggerRequest
		wantRule []int
	}{
		{TriggerRequest{All: true}, []int{0, 1}},
		{TriggerRequest{DockerTag: "dev"}, []int{1}},
		{TriggerRequest{DockerTag: "nope"}, nil},
		{TriggerRequest{SourceType: SourceTag, SourceName: "v2"}, []int{2}},
		{TriggerRequest{SourceType: SourceBranch, SourceName: "other"}, nil},
	}
	for _, tc := range tests {
		got, err := Plan(rules, tc.req)
		if tc.wantRule == nil {
			if !errors.Is(err, hubmesh.ErrNotFound) {
				t.Errorf("Plan(%s) = %v, %v; want ErrNotFound", tc.req, got, err)
			}
			continue
		}
		var idx []int
		for _, g := range got {
			idx = append(idx, g.Rule)
		}
		if err != nil || !reflect.DeepEqual(idx, tc.wantRule) {
			t.Errorf("Plan(%s) rules = %v, %v; want %v", tc.req, idx, err, tc.wantRule)
		}
	}
}
