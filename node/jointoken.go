package node

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh"
)

// Join tokens are "hmjt1.<payload>.<signature>": payload is base64url JSON
// claims, signature is base64url HMAC-SHA256 of the payload text under the
// cluster's token key, which lives in the replicated state so that every
// member can issue and check tokens. A token is bound to one cluster and
// expires; it carries the role the new node may take.
const joinTokenPrefix = "hmjt1"

type joinClaims struct {
	ClusterID string `json:"cid"`
	Role      string `json:"role"`
	Expires   int64  `json:"exp"`
	Nonce     string `json:"nonce"`
}

func signJoinToken(key []byte, c joinClaims) (string, error) {
	if c.Nonce == "" {
		n := make([]byte, 12)
		if _, err := rand.Read(n); err != nil {
			return "", err
		}
		c.Nonce = hex.EncodeToString(n)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	return joinTokenPrefix + "." + payload + "." + base64.RawURLEncoding.EncodeToString(joinMAC(key, payload)), nil
}

func joinMAC(key []byte, payload string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(joinTokenPrefix + "." + payload))
	return m.Sum(nil)
}

// verifyJoinToken checks a token against this cluster's id and key. Every
// failure wraps hubmesh.ErrDenied and says which check failed.
func verifyJoinToken(key []byte, clusterID, token string, now time.Time) (joinClaims, error) {
	var c joinClaims
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 || parts[0] != joinTokenPrefix {
		return c, fmt.Errorf("join token is malformed: %w", hubmesh.ErrDenied)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(raw, &c) != nil {
		return c, fmt.Errorf("join token is malformed: %w", hubmesh.ErrDenied)
	}
	if c.ClusterID != clusterID {
		return c, fmt.Errorf("join token belongs to another cluster (%.12s), not this one (%.12s): %w", c.ClusterID, clusterID, hubmesh.ErrDenied)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, joinMAC(key, parts[1])) {
		return c, fmt.Errorf("join token signature is invalid (forged or altered): %w", hubmesh.ErrDenied)
	}
	if exp := time.Unix(c.Expires, 0); !now.Before(exp) {
		return c, fmt.Errorf("join token expired at %s: %w", exp.UTC().Format(time.RFC3339), hubmesh.ErrDenied)
	}
	if c.Role != "voter" && c.Role != "mirror" {
		return c, fmt.Errorf("join token has unknown role %q: %w", c.Role, hubmesh.ErrDenied)
	}
	return c, nil
}
