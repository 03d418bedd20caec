package build

import (
	"fmt"

	"github.com/hubmesh/hubmesh"
)

// Conversions between the records the metadata plane keeps
// (hubmesh.BuildRule, hubmesh.BuildSource) and the types of this package,
// which interpret them. The fields are the same; they are copied one by
// one so that a field added to one side and not the other fails to
// compile here rather than vanish silently.

// RulesOf converts stored rules, normalizes and validates each one. The
// error names the rule (1-based, as a user counts) and wraps
// hubmesh.ErrInvalid.
func RulesOf(rules []hubmesh.BuildRule) ([]Rule, error) {
	out := make([]Rule, 0, len(rules))
	for i, r := range rules {
		br := Rule{
			SourceType: SourceType(r.SourceType),
			SourceName: r.SourceName,
			Tag:        r.Tag,
			Dockerfile: r.Dockerfile,
			Context:    r.Context,
			Autobuild:  r.Autobuild,
			BuildCache: r.BuildCache,
		}.Normalize()
		if err := br.Validate(); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		out = append(out, br)
	}
	return out, nil
}

// RecordOf converts a rule to its stored form.
func RecordOf(r Rule) hubmesh.BuildRule {
	return hubmesh.BuildRule{
		SourceType: string(r.SourceType),
		SourceName: r.SourceName,
		Tag:        r.Tag,
		Dockerfile: r.Dockerfile,
		Context:    r.Context,
		Autobuild:  r.Autobuild,
		BuildCache: r.BuildCache,
	}
}

// SourceOf converts a stored source, credentials included.
func SourceOf(s hubmesh.BuildSource) Source {
	src := Source{
		URL:                   s.URL,
		Username:              s.Username,
		Password:              s.Password,
		SSHKeyPassphrase:      s.SSHKeyPassphrase,
		HostKeyFingerprint:    s.HostKeyFingerprint,
		InsecureIgnoreHostKey: s.InsecureIgnoreHostKey,
	}
	if s.SSHKey != "" {
		src.SSHKey = []byte(s.SSHKey)
	}
	return src
}

// IsLocal reports whether the source is a path on the builder's disk
// (file:// or an absolute path) rather than a remote repository. An
// invalid URL is not local.
func (s Source) IsLocal() bool {
	k, _, err := s.kind()
	return err == nil && k == kindLocal
}
