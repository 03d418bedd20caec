package registryapi

import (
	_ "crypto/sha256" // registers the hash go-digest uses for sha256
	_ "crypto/sha512" // registers the hash go-digest uses for sha512
	"strings"

	"github.com/opencontainers/go-digest"
)

// Grammar limits. The OCI spec bounds a tag at 128 characters; a repository
// name is bounded so that host plus name stays under 255 as clients expect.
const (
	maxNameLength   = 255
	maxTagLength    = 128
	maxUploadIDSize = 128
)

// validName reports whether s matches the OCI repository name grammar:
//
//	[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//
// It is hand-written (no regexp) because it runs on every request.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLength {
		return false
	}
	for comp := range strings.SplitSeq(s, "/") {
		if !validNameComponent(comp) {
			return false
		}
	}
	return true
}

func validNameComponent(c string) bool {
	if c == "" || !isLowerAlnum(c[0]) || !isLowerAlnum(c[len(c)-1]) {
		return false
	}
	for i := 1; i < len(c); {
		if isLowerAlnum(c[i]) {
			i++
			continue
		}
		// a separator run: ".", "_", "__" or one or more "-"
		j := i
		switch c[i] {
		case '.':
			j++
		case '_':
			j++
			if j < len(c) && c[j] == '_' {
				j++
			}
		case '-':
			for j < len(c) && c[j] == '-' {
				j++
			}
		default:
			return false
		}
		if j >= len(c) || !isLowerAlnum(c[j]) {
			return false
		}
		i = j
	}
	return true
}

func isLowerAlnum(b byte) bool { return (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') }

// validTag reports whether s matches [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func validTag(s string) bool {
	if s == "" || len(s) > maxTagLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '_':
		case (b == '.' || b == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// validUploadID bounds what may reach Uploads.Get: ids are opaque but
// never contain separators, so nothing a client sends can name a path.
func validUploadID(s string) bool {
	if s == "" || len(s) > maxUploadIDSize || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	return true
}

// supportedAlgorithm reports whether the registry accepts content
// addressed with a.
func supportedAlgorithm(a digest.Algorithm) bool {
	return a == digest.SHA256 || a == digest.SHA512
}

// parseDigest parses a digest the client sent and accepts only the
// algorithms the registry stores (sha256, sha512), with their exact
// lower-case hex encodings.
func parseDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", newError(codeDigestInvalid, "digest is empty")
	}
	if len(s) > 7+1+128 { // "sha512:" + 128 hex is the longest we accept
		return "", newError(codeDigestInvalid, "invalid digest: too long")
	}
	d, err := digest.Parse(s)
	if err != nil {
		return "", newError(codeDigestInvalid, "invalid digest %q: %v", s, err)
	}
	if !supportedAlgorithm(d.Algorithm()) {
		return "", newError(codeDigestInvalid, "unsupported digest algorithm %q", d.Algorithm())
	}
	return d, nil
}

// parseAlgorithm parses the digest-algorithm query parameter.
func parseAlgorithm(s string) (digest.Algorithm, error) {
	a := digest.Algorithm(s)
	if !supportedAlgorithm(a) {
		return "", newError(codeDigestInvalid, "unsupported digest algorithm %q", s)
	}
	return a, nil
}

// reference is the <reference> of a manifest path: a tag or a digest.
type reference struct {
	Tag    string
	Digest digest.Digest
}

// String is the form the Manifests interface takes.
func (r reference) String() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// parseReference tells a digest (it has a colon) from a tag and validates
// either.
func parseReference(s string) (reference, error) {
	if strings.Contains(s, ":") {
		d, err := parseDigest(s)
		if err != nil {
			return reference{}, err
		}
		return reference{Digest: d}, nil
	}
	if !validTag(s) {
		return reference{}, newError(codeTagInvalid, "invalid tag %q", truncate(s, 160))
	}
	return reference{Tag: s}, nil
}

// truncate bounds client-supplied strings echoed back in messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
