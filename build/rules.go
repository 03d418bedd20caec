package build

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// SourceType says whether a rule or a push is about a branch or a tag.
type SourceType string

// Source types, spelled as on the CLI ("branch:main=>latest").
const (
	SourceBranch SourceType = "branch"
	SourceTag    SourceType = "tag"
)

// ParseSourceType accepts "branch" or "tag" in any case (Docker Hub spelled
// them "Branch" and "Tag").
func ParseSourceType(s string) (SourceType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "branch":
		return SourceBranch, nil
	case "tag":
		return SourceTag, nil
	}
	return "", fmt.Errorf("source type %q: want branch or tag: %w", s, hubmesh.ErrInvalid)
}

// Defaults applied by Rule.Normalize.
const (
	DefaultDockerfile  = "Dockerfile"
	DefaultContext     = "."
	DefaultTagTemplate = "{sourceref}"
	// MaxCaptureGroups is the number of capture groups a source regex may
	// have: the tag template can name {\1} to {\9}.
	MaxCaptureGroups = 9
	maxTagLen        = 128
)

// Rule is one build rule, as Docker Hub had them: which pushes it builds
// (source type and name), the tag it produces and how to build.
//
// Rule is plain data (JSON-friendly) so that it can live in a Raft command;
// Validate checks it and Normalize fills the defaults.
type Rule struct {
	SourceType SourceType `json:"source_type"`
	// SourceName is a branch or tag name, or a Go (RE2) regular expression
	// between slashes, "/^v([0-9.]+)$/". The regex is not anchored
	// implicitly, as on Docker Hub: write ^ and $ yourself.
	SourceName string `json:"source_name"`
	// Tag is the Docker tag template: literal tag characters, {sourceref}
	// (the branch or tag name that matched) and {\1}..{\9} (capture groups
	// of a regex source name). Several tags may be separated by commas,
	// "latest,{sourceref}". Empty means {sourceref}.
	Tag string `json:"tag"`
	// Dockerfile is the Dockerfile path relative to Context; empty means
	// "Dockerfile".
	Dockerfile string `json:"dockerfile,omitempty"`
	// Context is the build context directory relative to the repository
	// root; empty or "/" means the root.
	Context string `json:"context,omitempty"`
	// Autobuild: a push that matches this rule starts a build. Manual and
	// trigger URL builds ignore it.
	Autobuild bool `json:"autobuild"`
	// BuildCache: reuse the builder's layer cache (nocache=0).
	BuildCache bool `json:"build_cache"`
}

// Target is what one matching rule asks the builder to do: check out the
// source ref, build Dockerfile in Context and push the image under Tags.
type Target struct {
	SourceType SourceType
	SourceName string
	Tags       []string
	Dockerfile string // relative to Context, slash-separated
	Context    string // relative to the repository root, slash-separated
	Autobuild  bool
	BuildCache bool
	Rule       int // index of the rule in the slice given to Match
}

// ParseRule parses the CLI syntax TYPE:NAME[=>TAG], for example
// "branch:main=>latest" or `tag:/^v([0-9.]+)$/=>{\1}`. Dockerfile and
// context take their defaults; the caller sets them (and Autobuild,
// BuildCache) from other flags. The rule returned is validated.
func ParseRule(s string) (Rule, error) {
	typ, rest, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Rule{}, fmt.Errorf("build rule %q: want TYPE:NAME=>TAG, e.g. branch:main=>latest: %w", s, hubmesh.ErrInvalid)
	}
	st, err := ParseSourceType(typ)
	if err != nil {
		return Rule{}, fmt.Errorf("build rule %q: %w", s, err)
	}
	r := Rule{SourceType: st, SourceName: rest, Autobuild: true, BuildCache: true}
	// Tags cannot contain '=' or '>', so the last "=>" separates the tag
	// template even when a regex contains "=>".
	if i := strings.LastIndex(rest, "=>"); i >= 0 {
		r.SourceName, r.Tag = rest[:i], rest[i+2:]
	}
	r = r.Normalize()
	if err := r.Validate(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// String formats the rule in the syntax ParseRule reads (type, name and tag
// template only).
func (r Rule) String() string {
	return fmt.Sprintf("%s:%s=>%s", r.SourceType, r.SourceName, r.Normalize().Tag)
}

// Normalize returns r with defaults filled and paths cleaned. It does not
// validate.
func (r Rule) Normalize() Rule {
	r.SourceType = SourceType(strings.ToLower(strings.TrimSpace(string(r.SourceType))))
	r.SourceName = strings.TrimSpace(r.SourceName)
	r.Tag = strings.TrimSpace(r.Tag)
	if r.Tag == "" {
		r.Tag = DefaultTagTemplate
	}
	r.Dockerfile = cleanRel(r.Dockerfile, DefaultDockerfile)
	r.Context = cleanRel(r.Context, DefaultContext)
	return r
}

func cleanRel(p, def string) string {
	p = strings.TrimSpace(p)
	p = strings.TrimLeft(p, "/")
	if p == "" {
		return def
	}
	return path.Clean(p)
}

// IsRegex reports whether the source name is a /regex/.
func (r Rule) IsRegex() bool {
	n := strings.TrimSpace(r.SourceName)
	return len(n) >= 2 && n[0] == '/' && n[len(n)-1] == '/'
}

// Validate checks the rule after Normalize: the source type, the source
// name (a valid git ref name, or a regex that compiles with at most 9
// capture groups), the tag template (known placeholders, groups that
// exist, tag characters only) and the paths (relative, inside the
// repository). Errors wrap hubmesh.ErrInvalid.
func (r Rule) Validate() error {
	r = r.Normalize()
	if r.SourceType != SourceBranch && r.SourceType != SourceTag {
		return fmt.Errorf("build rule: source type %q: want branch or tag: %w", r.SourceType, hubmesh.ErrInvalid)
	}
	groups := 0
	if r.IsRegex() {
		re, err := r.regexp()
		if err != nil {
			return err
		}
		groups = re.NumSubexp()
	} else if err := checkRefName(r.SourceName); err != nil {
		return fmt.Errorf("build rule: source name: %w", err)
	}
	if err := checkTemplate(r.Tag, groups); err != nil {
		return fmt.Errorf("build rule %s:%s: %w", r.SourceType, r.SourceName, err)
	}
	for _, p := range []struct{ what, v string }{{"dockerfile", r.Dockerfile}, {"context", r.Context}} {
		if p.v == ".." || strings.HasPrefix(p.v, "../") {
			return fmt.Errorf("build rule: %s %q leaves the repository: %w", p.what, p.v, hubmesh.ErrInvalid)
		}
		if strings.ContainsAny(p.v, "\x00\n\r") {
			return fmt.Errorf("build rule: %s %q: control character: %w", p.what, p.v, hubmesh.ErrInvalid)
		}
	}
	if r.Dockerfile == "." {
		return fmt.Errorf("build rule: dockerfile %q is a directory: %w", r.Dockerfile, hubmesh.ErrInvalid)
	}
	return nil
}

func (r Rule) regexp() (*regexp.Regexp, error) {
	n := strings.TrimSpace(r.SourceName)
	expr := n[1 : len(n)-1]
	if expr == "" {
		return nil, fmt.Errorf("build rule: source name %q: empty regular expression: %w", n, hubmesh.ErrInvalid)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("build rule: source name %s does not compile (Go RE2 syntax): %v: %w", n, err, hubmesh.ErrInvalid)
	}
	if re.NumSubexp() > MaxCaptureGroups {
		return nil, fmt.Errorf("build rule: source name %s has %d capture groups, at most %d are allowed: %w",
			n, re.NumSubexp(), MaxCaptureGroups, hubmesh.ErrInvalid)
	}
	return re, nil
}

// checkRefName applies the main rules of git check-ref-format to a branch
// or tag name.
func checkRefName(n string) error {
	bad := func(why string) error {
		return fmt.Errorf("%q is not a valid git branch or tag name: %s: %w", n, why, hubmesh.ErrInvalid)
	}
	switch {
	case n == "":
		return bad("empty")
	case len(n) > 255:
		return bad("longer than 255 bytes")
	case strings.HasPrefix(n, "-"), strings.HasPrefix(n, "/"), strings.HasSuffix(n, "/"):
		return bad("starts with - or /, or ends with /")
	case strings.Contains(n, ".."), strings.Contains(n, "//"), strings.Contains(n, "@{"):
		return bad(`contains "..", "//" or "@{"`)
	case strings.HasSuffix(n, ".") || strings.HasSuffix(n, ".lock"):
		return bad(`ends with "." or ".lock"`)
	case n == "@":
		return bad(`is "@"`)
	}
	for _, c := range n {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return bad(fmt.Sprintf("contains %q", c))
		}
	}
	for _, seg := range strings.Split(n, "/") {
		if strings.HasPrefix(seg, ".") {
			return bad("a component starts with .")
		}
	}
	return nil
}

// checkTemplate checks a comma-separated tag template: placeholders known,
// capture groups present, literal text made of tag characters.
func checkTemplate(tmpl string, groups int) error {
	for _, one := range strings.Split(tmpl, ",") {
		one = strings.TrimSpace(one)
		if one == "" {
			return fmt.Errorf("tag template %q: empty tag: %w", tmpl, hubmesh.ErrInvalid)
		}
		_, err := expand(one, func(ph string) (string, error) {
			if ph == "sourceref" {
				return "x", nil
			}
			if n, ok := groupRef(ph); ok {
				if n > groups {
					return "", fmt.Errorf("tag template %q: {\\%d} names capture group %d, the source name has %d: %w",
						tmpl, n, n, groups, hubmesh.ErrInvalid)
				}
				return "x", nil
			}
			return "", fmt.Errorf("tag template %q: unknown placeholder {%s}; use {sourceref} or {\\1}..{\\9}: %w",
				tmpl, ph, hubmesh.ErrInvalid)
		})
		if err != nil {
			return err
		}
		for _, c := range literal(one) {
			if !tagChar(c) {
				return fmt.Errorf("tag template %q: %q is not allowed in a tag ([A-Za-z0-9_.-]): %w", tmpl, c, hubmesh.ErrInvalid)
			}
		}
	}
	return nil
}

// groupRef parses `\N` with N in 1..9.
func groupRef(ph string) (int, bool) {
	if len(ph) == 2 && ph[0] == '\\' && ph[1] >= '1' && ph[1] <= '9' {
		return int(ph[1] - '0'), true
	}
	return 0, false
}

// expand replaces each {placeholder} of s with f(placeholder).
func expand(s string, f func(string) (string, error)) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			if strings.IndexByte(s, '}') >= 0 {
				return "", fmt.Errorf("tag template: unmatched }: %w", hubmesh.ErrInvalid)
			}
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 || strings.IndexByte(s[:i], '}') >= 0 {
			return "", fmt.Errorf("tag template: unmatched { or }: %w", hubmesh.ErrInvalid)
		}
		v, err := f(s[i+1 : i+j])
		if err != nil {
			return "", err
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// literal returns s without its {placeholders}.
func literal(s string) string {
	out, _ := expand(s, func(string) (string, error) { return "", nil })
	return out
}

func tagChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// ValidTag reports whether s matches the OCI distribution tag grammar
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidTag(s string) bool {
	if s == "" || len(s) > maxTagLen || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !tagChar(c) {
			return false
		}
	}
	return true
}

// Apply matches the rule against a pushed branch or tag. ok is false when
// the rule does not match. A match whose rendered tag is not a valid OCI
// tag (a branch "feature/x" with {sourceref}) returns an error wrapping
// hubmesh.ErrInvalid, so the caller can record why nothing was built.
func (r Rule) Apply(st SourceType, name string) (t Target, ok bool, err error) {
	r = r.Normalize()
	if r.SourceType != st {
		return Target{}, false, nil
	}
	var groups []string
	if r.IsRegex() {
		re, err := r.regexp()
		if err != nil {
			return Target{}, false, err
		}
		groups = re.FindStringSubmatch(name)
		if groups == nil {
			return Target{}, false, nil
		}
	} else if r.SourceName != name {
		return Target{}, false, nil
	}
	tags, err := r.render(name, groups)
	if err != nil {
		return Target{}, true, err
	}
	return Target{
		SourceType: st, SourceName: name, Tags: tags,
		Dockerfile: r.Dockerfile, Context: r.Context,
		Autobuild: r.Autobuild, BuildCache: r.BuildCache,
	}, true, nil
}

func (r Rule) render(name string, groups []string) ([]string, error) {
	var tags []string
	for _, one := range strings.Split(r.Tag, ",") {
		tag, err := expand(strings.TrimSpace(one), func(ph string) (string, error) {
			if ph == "sourceref" {
				return name, nil
			}
			if n, ok := groupRef(ph); ok && n < len(groups) {
				return groups[n], nil
			}
			return "", fmt.Errorf("tag template %q: placeholder {%s} has no value: %w", r.Tag, ph, hubmesh.ErrInvalid)
		})
		if err != nil {
			return nil, err
		}
		if !ValidTag(tag) {
			return nil, fmt.Errorf("rule %s: %s %q gives tag %q, which is not a valid tag: %w",
				r, r.SourceType, name, tag, hubmesh.ErrInvalid)
		}
		if !contains(tags, tag) {
			tags = append(tags, tag)
		}
	}
	return tags, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Match returns a target for every rule that matches a push of the branch
// or tag name, in rule order. A tag produced by an earlier rule is not
// produced again; a rule that matches but renders an invalid tag (or is
// itself invalid) is skipped — use Rule.Apply to learn why. Autobuild is
// not checked: for pushes, keep the targets with Autobuild set.
func Match(rules []Rule, st SourceType, name string) []Target {
	var out []Target
	seen := map[string]bool{}
	for i, r := range rules {
		t, ok, err := r.Apply(st, name)
		if !ok || err != nil {
			continue
		}
		t.Rule = i
		t.Tags = dedupe(t.Tags, seen)
		if len(t.Tags) > 0 {
			out = append(out, t)
		}
	}
	return out
}

func dedupe(tags []string, seen map[string]bool) []string {
	var out []string
	for _, t := range tags {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// Plan returns the targets a trigger request builds:
//   - SourceType and SourceName set: Match (all matching rules, autobuild
//     or not);
//   - DockerTag set: the rules with a literal source name whose tags
//     include DockerTag;
//   - All: every rule with a literal source name.
//
// Rules with a regex source name can only be built for a named branch or
// tag: knowing which remote refs match would need a listing of the remote.
// An empty result is an error wrapping hubmesh.ErrNotFound.
func Plan(rules []Rule, req TriggerRequest) ([]Target, error) {
	var out []Target
	switch {
	case req.SourceName != "":
		out = Match(rules, req.SourceType, req.SourceName)
	default:
		seen := map[string]bool{}
		for i, r := range rules {
			r = r.Normalize()
			if r.IsRegex() {
				continue
			}
			t, ok, err := r.Apply(r.SourceType, r.SourceName)
			if !ok || err != nil {
				continue
			}
			if req.DockerTag != "" && !contains(t.Tags, req.DockerTag) {
				continue
			}
			t.Rule = i
			t.Tags = dedupe(t.Tags, seen)
			if len(t.Tags) > 0 {
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no build rule matches %s: %w", req, hubmesh.ErrNotFound)
	}
	return out, nil
}
