package auth

import (
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubmesh/hubmesh"
)

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"", ":", ":::", "repository:foo", "repository:Foo:pull", "repository:foo:pull",
		"repository:a/b:pull,push,delete,*", "repository(plugin):x:pull", "registry:catalog:*",
		"repository:localhost:5000/a:pull", "repository:café:pull", "repository:a.b_c__d--e/f:pull,,push",
		"repository:a:bogus", "repository():x:pull", "repository(a)(b):x:pull",
		"repository:" + strings.Repeat("a/", 200) + "a:pull",
		"repository:a:pull repository:b:push",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		} else {
			if len(s) > maxScopeLen || len(sc.Name) > maxNameLen || sc.Name == "" {
				t.Fatalf("accepted %q as %#v", s, sc)
			}
			if sc.Type != "repository" && sc.Type != "registry" {
				t.Fatalf("type %q", sc.Type)
			}
			if sc.Actions == nil || !slices.IsSorted(sc.Actions) || len(slices.Compact(slices.Clone(sc.Actions))) != len(sc.Actions) {
				t.Fatalf("actions %#v", sc.Actions)
			}
			for _, a := range sc.Actions {
				if !knownAction(a) {
					t.Fatalf("unknown action %q kept", a)
				}
			}
			if strings.ContainsAny(sc.Name, ": \t") {
				t.Fatalf("name %q", sc.Name)
			}
			if len(sc.Actions) > 0 {
				again, err := ParseScope(sc.String())
				if err != nil || again.String() != sc.String() || again.Class != sc.Class {
					t.Fatalf("%q -> %q does not parse back: %#v, %v", s, sc.String(), again, err)
				}
			}
		}
		scs, err := ParseScopes([]string{s, s})
		if err != nil && !errors.Is(err, hubmesh.ErrInvalid) {
			t.Fatalf("ParseScopes error %v does not wrap ErrInvalid", err)
		}
		if len(scs) > maxScopes {
			t.Fatalf("%d scopes", len(scs))
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	b64 := base64.StdEncoding.EncodeToString
	for _, s := range []string{
		"", " ", "Basic", "Basic ", "Bearer", "Bearer ", "Basic " + b64([]byte("alice:pw")),
		"basic " + base64.RawStdEncoding.EncodeToString([]byte("a:b:c")), "Basic " + b64([]byte(":pw")),
		"Basic " + b64([]byte("alice")), "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig", "Bearer a b", "Bearer ==",
		"Digest x", "Basic !!!", "BEARER tok", "Basic\t" + b64([]byte("a:b")),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseAuthorization(h)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrUnauthenticated) || c != (Credentials{}) {
				t.Fatalf("ParseAuthorization(%q) = %+v, %v", h, c, err)
			}
			return
		}
		switch c.Scheme {
		case "":
			if h != "" || c != (Credentials{}) {
				t.Fatalf("ParseAuthorization(%q) = %+v", h, c)
			}
		case SchemeBasic:
			if c.Username == "" || strings.Contains(c.Username, ":") || c.Token != "" || len(h) > maxHeaderLen {
				t.Fatalf("ParseAuthorization(%q) = %+v", h, c)
			}
			again, err := ParseAuthorization("Basic " + b64([]byte(c.Username+":"+c.Password)))
			if err != nil || again != c {
				t.Fatalf("basic %+v does not round trip: %+v, %v", c, again, err)
			}
		case SchemeBearer:
			if c.Token == "" || c.Username != "" || c.Password != "" || strings.ContainsAny(c.Token, " \t\r\n,\"") {
				t.Fatalf("ParseAuthorization(%q) = %+v", h, c)
			}
		default:
			t.Fatalf("scheme %q", c.Scheme)
		}
		ParseAccessToken(c.Password)
		ParseAccessToken(c.Token)
	})
}

func FuzzVerify(f *testing.F) {
	k := testKeys()[0]
	ks := mustKeySet(f, k)
	priv := privOf(f, k)
	good, err := ks.Sign(accessClaims())
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	for _, s := range []string{
		good, "", ".", "..", "a.b.c", parts[0] + "." + parts[1] + ".",
		handSigned(f, jwt.SigningMethodNone, k.ID, mapClaims(), jwt.UnsafeAllowNoneSignatureType),
		handSigned(f, jwt.SigningMethodHS256, k.ID, mapClaims(), []byte("secret")),
		handSigned(f, jwt.SigningMethodES256, k.ID, mapClaims(), priv),
		seg(map[string]any{"alg": "ES256", "kid": k.ID}) + "." + seg(map[string]any{"exp": 1e300, "iat": -1e300, "nbf": "x"}) + "." + parts[2],
		seg(map[string]any{"alg": "ES256", "kid": k.ID}) + "." + seg(map[string]any{"access": []any{map[string]any{"actions": 1}}}) + "." + parts[2],
	} {
		f.Add(s)
	}
	now := t0.Add(time.Minute)
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := ks.Verify(tok, issuer, svc, KindAccess, now)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		// Only what we signed verifies: the claims are ours.
		if c.Subject != "alice" || c.Issuer != issuer || c.Audience != svc || c.Kind != KindAccess {
			t.Fatalf("forged token verified: %q -> %+v", tok, c)
		}
		if len(c.Access) > 0 && (c.Access[0].Name != "alice/app" || len(c.Access) != 1) {
			t.Fatalf("forged access verified: %q -> %+v", tok, c)
		}
	})
}
