package auth

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// Registry actions, as the Docker token scope grammar spells them.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
	// ActionAll asks for every action the subject holds.
	ActionAll = "*"
)

// Resource types a scope may name.
const (
	typeRepository = "repository"
	typeRegistry   = "registry"
	// catalogName is the only resource of type registry: "registry:catalog:*".
	catalogName = "catalog"
)

// Bounds on client input.
const (
	maxScopeLen = 1024 // bytes of one scope string
	maxScopes   = 32   // scopes in one request, all parameters together
	maxNameLen  = 255  // bytes of a repository name
	maxClassLen = 64   // bytes of a resource class
)

// nameRE is the OCI distribution repository name grammar (path only, no
// host): lower-case components separated by '/', each component made of
// alphanumeric runs joined by '.', '_', '__' or runs of '-'.
var nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// classRE is the resource class grammar (distribution's "(plugin)").
var classRE = regexp.MustCompile(`^[a-z0-9]+$`)

// Scope is one resource scope of the Docker token grammar:
// type[(class)]:name:action[,action].
//
// ParseScope leaves Actions sorted (byte order) and free of duplicates; it
// may be empty (not nil) when every requested action was unknown.
type Scope struct {
	Type    string   // "repository" or "registry"
	Class   string   // resource class, usually "" ("plugin" in "repository(plugin)")
	Name    string   // repository name ("alice/app"), or "catalog" for type registry
	Actions []string // subset of pull, push, delete and *
}

// ParseScope parses one scope string. The type runs to the first ':', the
// actions follow the last ':', and the name is what lies between; the name
// must match the OCI repository name grammar (so it cannot hold a host or a
// port) and be at most 255 bytes. Known actions are pull, push, delete and
// "*"; unknown ones are dropped, as distribution does, but an empty action
// list is an error. Errors wrap hubmesh.ErrInvalid.
func ParseScope(s string) (Scope, error) {
	if len(s) > maxScopeLen {
		return Scope{}, fmt.Errorf("scope of %d bytes: %w: longer than %d", len(s), hubmesh.ErrInvalid, maxScopeLen)
	}
	first := strings.IndexByte(s, ':')
	last := strings.LastIndexByte(s, ':')
	if first < 0 || first == last {
		return Scope{}, fmt.Errorf("scope %q: %w: want type:name:actions", s, hubmesh.ErrInvalid)
	}
	typ, name, acts := s[:first], s[first+1:last], s[last+1:]

	var sc Scope
	if i := strings.IndexByte(typ, '('); i >= 0 {
		class, ok := strings.CutSuffix(typ[i+1:], ")")
		if !ok || len(class) > maxClassLen || !classRE.MatchString(class) {
			return Scope{}, fmt.Errorf("scope %q: %w: bad resource class", s, hubmesh.ErrInvalid)
		}
		typ, sc.Class = typ[:i], class
	}
	switch typ {
	case typeRepository:
		if len(name) > maxNameLen || !nameRE.MatchString(name) {
			return Scope{}, fmt.Errorf("scope %q: %w: bad repository name", s, hubmesh.ErrInvalid)
		}
	case typeRegistry:
		if name != catalogName {
			return Scope{}, fmt.Errorf("scope %q: %w: registry scope must name %q", s, hubmesh.ErrInvalid, catalogName)
		}
	default:
		return Scope{}, fmt.Errorf("scope %q: %w: unknown resource type", s, hubmesh.ErrInvalid)
	}
	sc.Type, sc.Name = typ, name

	sc.Actions = []string{}
	empty := true
	for a := range strings.SplitSeq(acts, ",") {
		if a == "" {
			continue
		}
		empty = false
		if knownAction(a) {
			sc.Actions = append(sc.Actions, a)
		}
	}
	if empty {
		return Scope{}, fmt.Errorf("scope %q: %w: no actions", s, hubmesh.ErrInvalid)
	}
	sc.Actions = sortedSet(sc.Actions)
	return sc, nil
}

// ParseScopes parses the scope parameters of one request: each parameter
// may hold several scopes separated by white space. Scopes naming the same
// type and name are merged into one (the first one's class is kept) with
// their actions united. At most 32 scopes are accepted in all. Errors wrap
// hubmesh.ErrInvalid; the result keeps the order of first appearance.
func ParseScopes(params []string) ([]Scope, error) {
	var out []Scope
	n := 0
	for _, p := range params {
		for f := range strings.FieldsSeq(p) {
			n++
			if n > maxScopes {
				return nil, fmt.Errorf("scopes: %w: more than %d", hubmesh.ErrInvalid, maxScopes)
			}
			sc, err := ParseScope(f)
			if err != nil {
				return nil, err
			}
			i := slices.IndexFunc(out, func(o Scope) bool { return o.Type == sc.Type && o.Name == sc.Name })
			if i < 0 {
				out = append(out, sc)
				continue
			}
			out[i].Actions = sortedSet(append(out[i].Actions, sc.Actions...))
		}
	}
	return out, nil
}

// String writes the scope in the token grammar, e.g.
// "repository:alice/app:pull,push". A scope with no actions ends in ':'
// and does not parse back.
func (s Scope) String() string {
	var b strings.Builder
	b.WriteString(s.Type)
	if s.Class != "" {
		b.WriteByte('(')
		b.WriteString(s.Class)
		b.WriteByte(')')
	}
	b.WriteByte(':')
	b.WriteString(s.Name)
	b.WriteByte(':')
	b.WriteString(strings.Join(s.Actions, ","))
	return b.String()
}

func knownAction(a string) bool {
	switch a {
	case ActionPull, ActionPush, ActionDelete, ActionAll:
		return true
	}
	return false
}

// sortedSet sorts ss in place and drops duplicates; it never returns nil.
func sortedSet(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	slices.Sort(ss)
	return slices.Compact(ss)
}
