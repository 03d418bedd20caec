package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubmesh/hubmesh"
)

var (
	t0     = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	issuer = "hubmesh:cluster-a"
	svc    = "registry.example"
)

// testKeys are made once: three keys of "cluster A" and one of "cluster B".
var testKeys = sync.OnceValue(func() []hubmesh.SigningKey {
	var ks []hubmesh.SigningKey
	for i := range 4 {
		k, err := NewSigningKey(t0.Add(time.Duration(i) * time.Hour))
		if err != nil {
			panic(err)
		}
		ks = append(ks, k)
	}
	return ks
})

func mustKeySet(t testing.TB, keys ...hubmesh.SigningKey) *KeySet {
	t.Helper()
	ks, err := NewKeySet(keys)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func privOf(t testing.TB, k hubmesh.SigningKey) *ecdsa.PrivateKey {
	t.Helper()
	p, err := x509.ParsePKCS8PrivateKey(k.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return p.(*ecdsa.PrivateKey)
}

func accessClaims() Claims {
	return Claims{
		Kind:     KindAccess,
		Issuer:   issuer,
		Subject:  "alice",
		Audience: svc,
		IssuedAt: t0,
		Expires:  t0.Add(AccessTokenTTL),
		Access:   []Access{{Type: "repository", Name: "alice/app", Actions: []string{"pull", "push"}}},
	}
}

// mapClaims is a valid claim set as a map, for hand-made tokens.
func mapClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": issuer, "sub": "alice", "aud": svc, "typ": KindAccess, "jti": "x",
		"iat": t0.Unix(), "nbf": t0.Unix(), "exp": t0.Add(AccessTokenTTL).Unix(),
	}
}

// handSigned signs claims with method and key, setting kid (unless "").
func handSigned(t testing.TB, m jwt.SigningMethod, kid string, c jwt.MapClaims, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func seg(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestNewSigningKey(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 5, time.FixedZone("x", 3600))
	k, err := NewSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$`).MatchString(k.ID) {
		t.Fatalf("kid %q is not libtrust-shaped", k.ID)
	}
	if !k.Created.Equal(now) || k.Created.Location() != time.UTC || !k.Retired.IsZero() {
		t.Fatalf("created %v retired %v", k.Created, k.Retired)
	}
	priv := privOf(t, k)
	if priv.Curve != elliptic.P256() {
		t.Fatalf("curve %v", priv.Curve.Params().Name)
	}
	if kid, _ := keyID(&priv.PublicKey); kid != k.ID {
		t.Fatalf("kid %q does not match the key (%q)", k.ID, kid)
	}
	if k2 := testKeys()[0]; k2.ID == k.ID || slices.Equal(k2.PrivateKey, k.PrivateKey) {
		t.Fatal("two keys alike")
	}
}

func TestNewKeySet(t *testing.T) {
	t.Parallel()
	k := testKeys()[0]
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	ecDER, _ := x509.MarshalECPrivateKey(privOf(t, k))
	bad := map[string][]hubmesh.SigningKey{
		"garbage DER":    {{ID: "a", PrivateKey: []byte("not a key")}},
		"no DER":         {{ID: "a"}},
		"RSA key":        {{ID: "a", PrivateKey: rsaDER}},
		"P-384 key":      {{ID: "a", PrivateKey: p384DER}},
		"SEC1 not PKCS8": {{ID: "a", PrivateKey: ecDER}},
		"empty kid":      {{PrivateKey: k.PrivateKey}},
		"duplicate kid":  {k, k},
	}
	for name, keys := range bad {
		if _, err := NewKeySet(keys); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	for _, keys := range [][]hubmesh.SigningKey{nil, {}} {
		ks, err := NewKeySet(keys)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Sign(accessClaims()); !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Errorf("Sign with no keys: %v", err)
		}
		if _, err := ks.Verify("a.b.c", issuer, svc, KindAccess, t0); !errors.Is(err, hubmesh.ErrUnauthenticated) {
			t.Errorf("Verify with no keys: %v", err)
		}
	}
	var nilKS *KeySet
	if _, err := nilKS.Sign(accessClaims()); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Errorf("nil Sign: %v", err)
	}
	if _, err := nilKS.Verify("a.b.c", issuer, svc, KindAccess, t0); !errors.Is(err, hubmesh.ErrUnauthenticated) {
		t.Errorf("nil Verify: %v", err)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	ks := mustKeySet(t, testKeys()[:2]...)
	tests := []struct {
		name string
		c    Claims
		now  time.Time
	}{
		{"access", accessClaims(), t0.Add(time.Minute)},
		{"anonymous access", func() Claims {
			c := accessClaims()
			c.Subject = ""
			c.Access = []Access{{Type: "repository", Name: "library/x", Actions: []string{"pull"}}}
			return c
		}(), t0},
		{"catalog and empty actions", func() Claims {
			c := accessClaims()
			c.Access = []Access{{Type: "registry", Name: "catalog", Actions: []string{"*"}}, {Type: "repository", Name: "a", Actions: []string{}}}
			return c
		}(), t0},
		{"no access", func() Claims { c := accessClaims(); c.Access = nil; return c }(), t0},
		{"refresh", Claims{Kind: KindRefresh, Issuer: issuer, Subject: "alice", Audience: svc, ID: "myjti", IssuedAt: t0, Expires: t0.Add(RefreshTTL)}, t0.Add(RefreshTTL - time.Second)},
		{"session", Claims{Kind: KindSession, Issuer: issuer, Subject: "alice", Audience: "hubmesh-api", IssuedAt: t0, NotBefore: t0.Add(-time.Minute), Expires: t0.Add(SessionTTL)}, t0.Add(SessionTTL / 2)},
		{"sub-second times", func() Claims {
			c := accessClaims()
			c.IssuedAt = t0.Add(500 * time.Millisecond)
			c.Expires = c.IssuedAt.Add(AccessTokenTTL)
			return c
		}(), t0.Add(time.Minute)},
		{"non-UTC times", func() Claims {
			c := accessClaims()
			c.IssuedAt = t0.In(time.FixedZone("y", -7200))
			c.Expires = c.IssuedAt.Add(AccessTokenTTL)
			return c
		}(), t0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ks.Sign(tt.c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ks.Verify(tok, tt.c.Issuer, tt.c.Audience, tt.c.Kind, tt.now)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := tt.c
			want.IssuedAt = want.IssuedAt.Truncate(time.Second).UTC()
			want.Expires = want.Expires.Truncate(time.Second).UTC()
			if want.NotBefore.IsZero() {
				want.NotBefore = want.IssuedAt
			}
			want.NotBefore = want.NotBefore.Truncate(time.Second).UTC()
			if want.ID == "" {
				if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got.ID) {
					t.Fatalf("jti %q", got.ID)
				}
				want.ID = got.ID
			}
			if got.Kind != want.Kind || got.Issuer != want.Issuer || got.Subject != want.Subject ||
				got.Audience != want.Audience || got.ID != want.ID || !got.IssuedAt.Equal(want.IssuedAt) ||
				got.IssuedAt.Location() != time.UTC || !got.NotBefore.Equal(want.NotBefore) || !got.Expires.Equal(want.Expires) ||
				len(got.Access) != len(want.Access) {
				t.Fatalf("claims\n got %+v\nwant %+v", got, want)
			}
			for i := range want.Access {
				if got.Access[i].Type != want.Access[i].Type || got.Access[i].Name != want.Access[i].Name ||
					!slices.Equal(got.Access[i].Actions, want.Access[i].Actions) {
					t.Fatalf("access %d: got %+v, want %+v", i, got.Access[i], want.Access[i])
				}
			}
		})
	}
}

// TestTokenWireFormat checks the header and claim names clients and
// other registries read.
func TestTokenWireFormat(t *testing.T) {
	t.Parallel()
	ks := mustKeySet(t, testKeys()[0])
	c := accessClaims()
	c.Access = append(c.Access, Access{Type: "repository", Name: "b"}) // nil actions
	tok, err := ks.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	var hdr map[string]any
	var body map[string]any
	for i, v := range []any{&hdr, &body} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if hdr["alg"] != "ES256" || hdr["kid"] != testKeys()[0].ID {
		t.Fatalf("header %v", hdr)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access", "typ"} {
		if _, ok := body[k]; !ok {
			t.Errorf("claim %q missing from %v", k, body)
		}
	}
	if body["aud"] != svc || body["typ"] != "access" || body["exp"] != float64(t0.Add(AccessTokenTTL).Unix()) {
		t.Errorf("claims %v", body)
	}
	acc, _ := json.Marshal(body["access"])
	if string(acc) != `[{"actions":["pull","push"],"name":"alice/app","type":"repository"},{"actions":[],"name":"b","type":"repository"}]` {
		t.Errorf("access claim %s", acc)
	}
}

func TestSignChoosesNewestActiveKey(t *testing.T) {
	t.Parallel()
	k := slices.Clone(testKeys()[:3]) // created t0, t0+1h, t0+2h
	k[2].Retired = t0.Add(3 * time.Hour)
	// Order in the slice does not matter.
	ks := mustKeySet(t, k[2], k[1], k[0])
	tok, err := ks.Sign(accessClaims())
	if err != nil {
		t.Fatal(err)
	}
	if kid := kidOf(t, tok); kid != k[1].ID {
		t.Fatalf("signed with %q, want %q", kid, k[1].ID)
	}
	for i := range k {
		k[i].Retired = t0
	}
	if _, err := mustKeySet(t, k...).Sign(accessClaims()); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("all retired: err = %v, want ErrUnavailable", err)
	}
}

func kidOf(t testing.TB, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

func TestSignRefuses(t *testing.T) {
	t.Parallel()
	ks := mustKeySet(t, testKeys()[0])
	mod := func(f func(*Claims)) Claims { c := accessClaims(); f(&c); return c }
	tests := map[string]Claims{
		"no kind":          mod(func(c *Claims) { c.Kind = "" }),
		"no issuer":        mod(func(c *Claims) { c.Issuer = "" }),
		"no audience":      mod(func(c *Claims) { c.Audience = "" }),
		"no expiry":        mod(func(c *Claims) { c.Expires = time.Time{} }),
		"expires first":    mod(func(c *Claims) { c.Expires = c.IssuedAt.Add(-time.Second) }),
		"zero lifetime":    mod(func(c *Claims) { c.Expires = c.IssuedAt }),
		"over max ttl":     mod(func(c *Claims) { c.Expires = c.IssuedAt.Add(MaxTokenTTL + time.Second) }),
		"too big to carry": mod(func(c *Claims) { c.Access = slices.Repeat(c.Access, 200) }),
	}
	for name, c := range tests {
		if tok, err := ks.Sign(c); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: Sign = %q, %v; want ErrInvalid", name, tok, err)
		}
	}
	// Defaults: IssuedAt now, NotBefore = IssuedAt, distinct jti.
	c := accessClaims()
	c.IssuedAt = time.Time{}
	c.Expires = time.Now().Add(time.Hour)
	a, err := ks.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ks.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ks.Verify(a, issuer, svc, KindAccess, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := ks.Verify(b, issuer, svc, KindAccess, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ca.ID == cb.ID || !ca.NotBefore.Equal(ca.IssuedAt) || time.Since(ca.IssuedAt) > time.Minute {
		t.Fatalf("defaults: %+v / %+v", ca, cb)
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	kA := keys[0]
	ks := mustKeySet(t, kA)
	privA := privOf(t, kA)
	good, err := ks.Sign(accessClaims())
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Minute)
	if _, err := ks.Verify(good, issuer, svc, KindAccess, now); err != nil {
		t.Fatalf("good token refused: %v", err)
	}
	parts := strings.Split(good, ".")

	pubDER, _ := x509.MarshalPKIXPublicKey(&privA.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// Another cluster: its own key set, and a key that claims A's kid.
	otherKS := mustKeySet(t, keys[3])
	fromOther, err := otherKS.Sign(accessClaims())
	if err != nil {
		t.Fatal(err)
	}
	impostor := keys[3]
	impostor.ID = kA.ID
	fromImpostor, err := mustKeySet(t, impostor).Sign(accessClaims())
	if err != nil {
		t.Fatal(err)
	}

	withClaim := func(k string, v any) string {
		c := mapClaims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return handSigned(t, jwt.SigningMethodES256, kA.ID, c, privA)
	}
	tamperedClaims := mapClaims()
	tamperedClaims["sub"] = "admin"

	tests := []struct {
		name  string
		token string
		iss   string // "" -> issuer
		aud   string // "" -> svc
		kind  string // "" -> KindAccess
		now   time.Time
	}{
		{name: "empty", token: ""},
		{name: "dots", token: ".."},
		{name: "garbage", token: "a.b.c"},
		{name: "two parts", token: parts[0] + "." + parts[1]},
		{name: "four parts", token: good + ".x"},
		{name: "padded segments", token: parts[0] + "=." + parts[1] + "." + parts[2]},
		{name: "too long", token: good + strings.Repeat("A", maxTokenLen)},
		{name: "alg none", token: handSigned(t, jwt.SigningMethodNone, kA.ID, mapClaims(), jwt.UnsafeAllowNoneSignatureType)},
		{name: "alg none hand made", token: seg(map[string]any{"alg": "none", "kid": kA.ID}) + "." + parts[1] + "."},
		{name: "alg NONE", token: seg(map[string]any{"alg": "NONE", "kid": kA.ID}) + "." + parts[1] + "."},
		{name: "alg missing", token: seg(map[string]any{"kid": kA.ID}) + "." + parts[1] + "." + parts[2]},
		{name: "alg not a string", token: seg(map[string]any{"alg": 1, "kid": kA.ID}) + "." + parts[1] + "." + parts[2]},
		{name: "HS256 with public key DER", token: handSigned(t, jwt.SigningMethodHS256, kA.ID, mapClaims(), pubDER)},
		{name: "HS256 with public key PEM", token: handSigned(t, jwt.SigningMethodHS256, kA.ID, mapClaims(), pubPEM)},
		{name: "ES384", token: handSigned(t, jwt.SigningMethodES384, kA.ID, mapClaims(), p384)},
		{name: "RS256", token: handSigned(t, jwt.SigningMethodRS256, kA.ID, mapClaims(), rsaKey)},
		{name: "ES256 header on ES384 signature", token: seg(map[string]any{"alg": "ES256", "kid": kA.ID}) + "." + strings.Split(handSigned(t, jwt.SigningMethodES384, kA.ID, mapClaims(), p384), ".")[1] + "." + strings.Split(handSigned(t, jwt.SigningMethodES384, kA.ID, mapClaims(), p384), ".")[2]},
		{name: "no kid", token: handSigned(t, jwt.SigningMethodES256, "", mapClaims(), privA)},
		{name: "kid not a string", token: func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodES256, mapClaims())
			tok.Header["kid"] = 7
			s, _ := tok.SignedString(privA)
			return s
		}()},
		{name: "unknown kid", token: handSigned(t, jwt.SigningMethodES256, "AAAA:BBBB", mapClaims(), privA)},
		{name: "other cluster", token: fromOther},
		{name: "other cluster key with our kid", token: fromImpostor},
		{name: "tampered payload", token: parts[0] + "." + seg(tamperedClaims) + "." + parts[2]},
		{name: "tampered header", token: seg(map[string]any{"alg": "ES256", "kid": kA.ID, "x": 1}) + "." + parts[1] + "." + parts[2]},
		{name: "tampered signature", token: parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))},
		{name: "signature truncated", token: parts[0] + "." + parts[1] + "." + parts[2][:40]},
		{name: "wrong issuer", token: good, iss: "hubmesh:cluster-b"},
		{name: "wrong audience", token: good, aud: "other.example"},
		{name: "wrong kind refresh", token: good, kind: KindRefresh},
		{name: "wrong kind session", token: good, kind: KindSession},
		{name: "verifier without issuer", token: good, iss: "-"},
		{name: "verifier without audience", token: good, aud: "-"},
		{name: "verifier without kind", token: good, kind: "-"},
		{name: "expired", token: good, now: t0.Add(AccessTokenTTL + leeway + time.Second)},
		{name: "not yet valid", token: good, now: t0.Add(-leeway - time.Second)},
		{name: "nbf in future", token: withClaim("nbf", t0.Add(time.Hour).Unix()), now: t0.Add(time.Minute)},
		{name: "iat in future", token: withClaim("iat", t0.Add(3*time.Minute).Unix())},
		{name: "no exp", token: withClaim("exp", nil)},
		{name: "no nbf", token: withClaim("nbf", nil)},
		{name: "no iat", token: withClaim("iat", nil)},
		{name: "no typ", token: withClaim("typ", nil)},
		{name: "no iss", token: withClaim("iss", nil)},
		{name: "no aud", token: withClaim("aud", nil)},
		{name: "aud array", token: withClaim("aud", []string{svc})},
		{name: "exp as string", token: withClaim("exp", "9999999999")},
		{name: "lifetime above max", token: withClaim("exp", t0.Add(MaxTokenTTL+time.Hour).Unix())},
		{name: "access not a list", token: withClaim("access", "all")},
		{name: "claims not an object", token: parts[0] + "." + seg([]int{1}) + "." + parts[2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, aud, kind, at := issuer, svc, KindAccess, now
			if tt.iss != "" {
				iss = strings.TrimPrefix(tt.iss, "-")
			}
			if tt.aud != "" {
				aud = strings.TrimPrefix(tt.aud, "-")
			}
			if tt.kind != "" {
				kind = strings.TrimPrefix(tt.kind, "-")
			}
			if !tt.now.IsZero() {
				at = tt.now
			}
			c, err := ks.Verify(tt.token, iss, aud, kind, at)
			if !errors.Is(err, hubmesh.ErrUnauthenticated) {
				t.Fatalf("Verify = %+v, %v; want ErrUnauthenticated", c, err)
			}
			if c.Subject != "" || c.Access != nil || c.Issuer != "" {
				t.Fatalf("claims returned with an error: %+v", c)
			}
			t.Log(err)
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	t.Parallel()
	ks := mustKeySet(t, testKeys()[0])
	tok, err := ks.Sign(accessClaims())
	if err != nil {
		t.Fatal(err)
	}
	for _, now := range []time.Time{
		t0.Add(-leeway + time.Second),                 // client clock behind: nbf/iat in the near future
		t0.Add(AccessTokenTTL + leeway - time.Second), // just expired, within leeway
	} {
		if _, err := ks.Verify(tok, issuer, svc, KindAccess, now); err != nil {
			t.Errorf("at %v: %v", now.Sub(t0), err)
		}
	}
}

func TestVerifyRetiredKey(t *testing.T) {
	t.Parallel()
	old, cur := testKeys()[0], testKeys()[1]
	retiredAt := t0.Add(24 * time.Hour)
	oldRetired := old
	oldRetired.Retired = retiredAt

	// A refresh token signed by the old key just before it was retired
	// keeps verifying after the rotation, for as long as it lives.
	before := mustKeySet(t, old)
	refresh := Claims{Kind: KindRefresh, Issuer: issuer, Subject: "alice", Audience: svc,
		IssuedAt: retiredAt.Add(-time.Minute), Expires: retiredAt.Add(-time.Minute + RefreshTTL)}
	tok, err := before.Sign(refresh)
	if err != nil {
		t.Fatal(err)
	}
	after := mustKeySet(t, oldRetired, cur)
	for _, now := range []time.Time{retiredAt.Add(time.Hour), retiredAt.Add(MaxTokenTTL - 2*time.Minute)} {
		if _, err := after.Verify(tok, issuer, svc, KindRefresh, now); err != nil {
			t.Errorf("at retired+%v: %v", now.Sub(retiredAt), err)
		}
	}
	// New tokens are signed by the current key.
	if s, err := after.Sign(accessClaims()); err != nil || kidOf(t, s) != cur.ID {
		t.Fatalf("after rotation signed with %q, %v", kidOf(t, s), err)
	}

	// A token the old key signed late (a node that missed the rotation)
	// stops verifying once the key is past Retired+MaxTokenTTL, even if
	// the token itself has not expired.
	late := accessClaims()
	late.IssuedAt = retiredAt.Add(MaxTokenTTL + time.Hour)
	late.Expires = late.IssuedAt.Add(AccessTokenTTL)
	lateTok, err := before.Sign(late)
	if err != nil {
		t.Fatal(err)
	}
	now := late.IssuedAt.Add(time.Minute)
	if _, err := before.Verify(lateTok, issuer, svc, KindAccess, now); err != nil {
		t.Fatalf("with the key active: %v", err)
	}
	if _, err := after.Verify(lateTok, issuer, svc, KindAccess, now); !errors.Is(err, hubmesh.ErrUnauthenticated) {
		t.Fatalf("key retired past the window: err = %v", err)
	}
	// Pruned keys (no longer in the set) verify nothing.
	if _, err := mustKeySet(t, cur).Verify(tok, issuer, svc, KindRefresh, retiredAt.Add(time.Hour)); !errors.Is(err, hubmesh.ErrUnauthenticated) {
		t.Fatalf("pruned key: err = %v", err)
	}
}

func TestKeySetConcurrent(t *testing.T) {
	t.Parallel()
	ks := mustKeySet(t, testKeys()[:2]...)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				tok, err := ks.Sign(accessClaims())
				if err == nil {
					_, err = ks.Verify(tok, issuer, svc, KindAccess, t0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
