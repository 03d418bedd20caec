package auth

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hubmesh/hubmesh"
)

// maxHeaderLen bounds an Authorization header; common proxies refuse
// longer header lines anyway.
const maxHeaderLen = 8 << 10

// Authorization schemes as Credentials reports them.
const (
	SchemeBasic  = "basic"
	SchemeBearer = "bearer"
)

// Credentials are what an Authorization header carries: a user name and
// password (Scheme "basic"), a token (Scheme "bearer"), or nothing
// (Scheme "").
type Credentials struct {
	Scheme   string // "basic", "bearer" or "" (no header)
	Username string // basic only; never empty, never holds ':'
	Password string // basic only; may hold ':'
	Token    string // bearer only; token68 characters
}

// ParseAuthorization reads an HTTP Authorization header. An empty header
// gives zero Credentials and no error. "Basic" (any case) takes standard
// base64, padded or not, of "user:password"; "Bearer" takes a token68.
// Anything else, or a header longer than 8 KiB, gives an error wrapping
// hubmesh.ErrUnauthenticated.
func ParseAuthorization(h string) (Credentials, error) {
	if h == "" {
		return Credentials{}, nil
	}
	if len(h) > maxHeaderLen {
		return Credentials{}, fmt.Errorf("authorization header of %d bytes: %w", len(h), hubmesh.ErrUnauthenticated)
	}
	scheme, rest, _ := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	rest = strings.Trim(rest, " \t")
	switch {
	case strings.EqualFold(scheme, SchemeBasic):
		return parseBasic(rest)
	case strings.EqualFold(scheme, SchemeBearer):
		if !isToken68(rest) {
			return Credentials{}, fmt.Errorf("bearer credentials: %w: malformed", hubmesh.ErrUnauthenticated)
		}
		return Credentials{Scheme: SchemeBearer, Token: rest}, nil
	default:
		return Credentials{}, fmt.Errorf("authorization scheme %.20q: %w: want Basic or Bearer", scheme, hubmesh.ErrUnauthenticated)
	}
}

func parseBasic(v string) (Credentials, error) {
	// The decoder skips '\r' and '\n'; refuse them rather than read past.
	if strings.ContainsAny(v, "\r\n") {
		return Credentials{}, fmt.Errorf("basic credentials: %w: not base64", hubmesh.ErrUnauthenticated)
	}
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(v)
	}
	if err != nil || v == "" {
		return Credentials{}, fmt.Errorf("basic credentials: %w: not base64", hubmesh.ErrUnauthenticated)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || !utf8.ValidString(user) || strings.ContainsFunc(user, isControl) {
		return Credentials{}, fmt.Errorf("basic credentials: %w: want user:password", hubmesh.ErrUnauthenticated)
	}
	return Credentials{Scheme: SchemeBasic, Username: user, Password: pass}, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// isToken68 reports whether s is an RFC 7235 token68:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isToken68(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
