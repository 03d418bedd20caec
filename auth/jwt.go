package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubmesh/hubmesh"
)

// Token lifetimes.
const (
	// MaxTokenTTL is the longest lifetime of any token, and how long a
	// retired signing key keeps verifying after it was retired.
	MaxTokenTTL = 30 * 24 * time.Hour
	// AccessTokenTTL is the lifetime of a registry token from /token.
	AccessTokenTTL = 5 * time.Minute
	// SessionTTL is the lifetime of an API session token (POST /api/v1/users/login).
	SessionTTL = time.Hour
	// RefreshTTL is the lifetime of a refresh token.
	RefreshTTL = MaxTokenTTL
)

// Token kinds, carried in the "typ" claim.
const (
	KindAccess  = "access"  // registry token from /token
	KindRefresh = "refresh" // OAuth2 refresh token
	KindSession = "session" // API session token
)

const (
	// leeway tolerates clock skew between the nodes and the clients.
	leeway = 60 * time.Second
	// maxTokenLen bounds a token in bytes; it must fit in an
	// Authorization header (ParseAuthorization takes up to 8 KiB).
	maxTokenLen = 8000
	algES256    = "ES256"
)

// Access is one granted resource of a registry token, as distribution
// writes it in the "access" claim.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Claims are the claims of a hubmesh JWT.
type Claims struct {
	// Kind is KindAccess, KindRefresh or KindSession (claim "typ").
	Kind string
	// Issuer is "hubmesh:<clusterID>"; Subject the user name ("" for an
	// anonymous registry token); Audience the service (a single string);
	// ID the "jti" (Sign fills a random one when empty).
	Issuer, Subject, Audience, ID string
	// IssuedAt, NotBefore and Expires are kept to the second. Sign uses
	// the current time for an unset IssuedAt and IssuedAt for an unset
	// NotBefore; Expires is required.
	IssuedAt, NotBefore, Expires time.Time
	// Access lists the granted resources of a registry token.
	Access []Access
}

// wireClaims is the JSON form of Claims.
type wireClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  string           `json:"aud"`
	Expires   *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	ID        string           `json:"jti"`
	Access    []Access         `json:"access,omitempty"`
	Kind      string           `json:"typ"`
}

var _ jwt.Claims = (*wireClaims)(nil)

func (c *wireClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.Expires, nil }
func (c *wireClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c *wireClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore, nil }
func (c *wireClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *wireClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *wireClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Audience}, nil
}

// signingKey is one parsed hubmesh.SigningKey.
type signingKey struct {
	id      string
	priv    *ecdsa.PrivateKey
	created time.Time
	retired time.Time
}

// KeySet holds the cluster's signing keys, parsed, by kid. It is
// immutable and safe for concurrent use; build a new one when the keys
// change (rotation).
type KeySet struct {
	keys   map[string]*signingKey
	active *signingKey // newest non-retired key, nil if none
}

// NewKeySet parses keys (PKCS #8 DER of ECDSA P-256 keys). A key that
// does not parse, an empty or duplicated kid is an error wrapping
// hubmesh.ErrInvalid. No keys at all is allowed: such a set verifies
// nothing and cannot sign.
func NewKeySet(keys []hubmesh.SigningKey) (*KeySet, error) {
	ks := &KeySet{keys: make(map[string]*signingKey, len(keys))}
	for _, k := range keys {
		if k.ID == "" {
			return nil, fmt.Errorf("signing key: %w: empty kid", hubmesh.ErrInvalid)
		}
		if _, dup := ks.keys[k.ID]; dup {
			return nil, fmt.Errorf("signing key %s: %w: duplicate kid", k.ID, hubmesh.ErrInvalid)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(k.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w: %v", k.ID, hubmesh.ErrInvalid, err)
		}
		priv, ok := parsed.(*ecdsa.PrivateKey)
		if !ok || priv.Curve != elliptic.P256() {
			return nil, fmt.Errorf("signing key %s: %w: not an ECDSA P-256 key", k.ID, hubmesh.ErrInvalid)
		}
		sk := &signingKey{id: k.ID, priv: priv, created: k.Created, retired: k.Retired}
		ks.keys[k.ID] = sk
		if sk.retired.IsZero() && (ks.active == nil || sk.created.After(ks.active.created)) {
			ks.active = sk
		}
	}
	return ks, nil
}

// NewSigningKey makes a fresh ECDSA P-256 signing key created at now. Its
// kid is the libtrust key id distribution uses: the first 30 bytes of the
// SHA-256 of the PKIX public key, in unpadded base32, as 12 groups of 4
// characters joined by ':'.
func NewSigningKey(now time.Time) (hubmesh.SigningKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return hubmesh.SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return hubmesh.SigningKey{}, fmt.Errorf("signing key: %w", err)
	}
	kid, err := keyID(&priv.PublicKey)
	if err != nil {
		return hubmesh.SigningKey{}, err
	}
	return hubmesh.SigningKey{ID: kid, PrivateKey: der, Created: now.UTC()}, nil
}

func keyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("signing key id: %w", err)
	}
	sum := sha256.Sum256(der)
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:30])
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(s[i : i+4])
	}
	return b.String(), nil
}

// Sign signs c with the newest key that is not retired and returns the
// compact JWT (header alg ES256 and kid). Kind, Issuer, Audience and
// Expires are required, Expires must come after IssuedAt and within
// MaxTokenTTL of it (errors wrap hubmesh.ErrInvalid); with no active key
// the error wraps hubmesh.ErrUnavailable.
func (ks *KeySet) Sign(c Claims) (string, error) {
	if ks == nil || ks.active == nil {
		return "", fmt.Errorf("sign token: %w: no active signing key", hubmesh.ErrUnavailable)
	}
	if c.Kind == "" || c.Issuer == "" || c.Audience == "" || c.Expires.IsZero() {
		return "", fmt.Errorf("sign token: %w: kind, issuer, audience and expiry are required", hubmesh.ErrInvalid)
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt
	}
	if life := c.Expires.Sub(c.IssuedAt); life <= 0 || life > MaxTokenTTL {
		return "", fmt.Errorf("sign token: %w: lifetime %v not in (0, %v]", hubmesh.ErrInvalid, life, MaxTokenTTL)
	}
	if c.ID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("sign token: %w", err)
		}
		c.ID = hex.EncodeToString(b[:])
	}
	w := &wireClaims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  c.Audience,
		Expires:   jwt.NewNumericDate(c.Expires),
		NotBefore: jwt.NewNumericDate(c.NotBefore),
		IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
		ID:        c.ID,
		Kind:      c.Kind,
	}
	for _, a := range c.Access {
		if a.Actions == nil {
			a.Actions = []string{}
		}
		w.Access = append(w.Access, a)
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, w)
	t.Header["kid"] = ks.active.id
	s, err := t.SignedString(ks.active.priv)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	if len(s) > maxTokenLen {
		return "", fmt.Errorf("sign token: %w: %d bytes, more than %d", hubmesh.ErrInvalid, len(s), maxTokenLen)
	}
	return s, nil
}

// Verify checks token at time now and returns its claims. It refuses a
// malformed token, any alg but ES256 (none, HS256, ES384, RS256...), an
// unknown kid, a bad signature, an issuer, audience or kind ("typ") other
// than the ones given, a missing exp, nbf or iat, an expired token or one
// not valid yet (60 s leeway either way), a lifetime above MaxTokenTTL,
// and a key retired more than MaxTokenTTL before now. Errors wrap
// hubmesh.ErrUnauthenticated (and the jwt/v5 error when there is one).
func (ks *KeySet) Verify(token, issuer, audience, kind string, now time.Time) (Claims, error) {
	if ks == nil || len(ks.keys) == 0 {
		return Claims{}, fmt.Errorf("verify token: %w: no signing keys", hubmesh.ErrUnauthenticated)
	}
	if issuer == "" || audience == "" || kind == "" {
		return Claims{}, fmt.Errorf("verify token: %w: issuer, audience and kind are required", hubmesh.ErrUnauthenticated)
	}
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("verify token: %w: longer than %d bytes", hubmesh.ErrUnauthenticated, maxTokenLen)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{algES256}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
		jwt.WithNotBeforeRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var w wireClaims
	_, err := p.ParseWithClaims(token, &w, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodES256 {
			return nil, errors.New("signing method is not ES256")
		}
		kid, _ := t.Header["kid"].(string)
		k := ks.keys[kid]
		if k == nil {
			return nil, errors.New("unknown kid")
		}
		if !k.retired.IsZero() && now.After(k.retired.Add(MaxTokenTTL)) {
			return nil, errors.New("signing key retired")
		}
		return &k.priv.PublicKey, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("verify token: %w: %w", hubmesh.ErrUnauthenticated, err)
	}
	switch {
	case w.Kind != kind:
		return Claims{}, fmt.Errorf("verify token: %w: kind %q, want %q", hubmesh.ErrUnauthenticated, w.Kind, kind)
	case w.IssuedAt == nil:
		return Claims{}, fmt.Errorf("verify token: %w: no iat", hubmesh.ErrUnauthenticated)
	case w.Expires.Sub(w.IssuedAt.Time) > MaxTokenTTL:
		return Claims{}, fmt.Errorf("verify token: %w: lifetime above %v", hubmesh.ErrUnauthenticated, MaxTokenTTL)
	}
	return Claims{
		Kind:      w.Kind,
		Issuer:    w.Issuer,
		Subject:   w.Subject,
		Audience:  w.Audience,
		ID:        w.ID,
		IssuedAt:  w.IssuedAt.UTC(),
		NotBefore: w.NotBefore.UTC(),
		Expires:   w.Expires.UTC(),
		Access:    w.Access,
	}, nil
}
