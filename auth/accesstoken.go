package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Access token secrets look like "hmp_<id>_<rand>": id is 16 lower-case hex
// digits (8 random bytes), rand the unpadded base64url of 32 random bytes
// (43 characters, which may themselves hold '_' and '-').
const (
	accessTokenPrefix  = "hmp_"
	accessTokenIDLen   = 16
	accessTokenRandLen = 43
	accessTokenLen     = len(accessTokenPrefix) + accessTokenIDLen + 1 + accessTokenRandLen
)

// NewAccessToken makes a personal access token: the secret shown to the
// user once, the id it is stored under (hubmesh.AccessToken.ID) and the
// hash stored in its place (hubmesh.AccessToken.Hash, HashAccessToken of
// the whole secret).
func NewAccessToken() (secret, id, hash string, err error) {
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", "", fmt.Errorf("access token: %w", err)
	}
	id = hex.EncodeToString(b[:8])
	secret = accessTokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(b[8:])
	return secret, id, HashAccessToken(secret), nil
}

// ParseAccessToken checks that secret has the exact shape NewAccessToken
// makes and returns its id and hash; ok is false for anything else
// (a password, a JWT, a truncated or altered secret).
func ParseAccessToken(secret string) (id, hash string, ok bool) {
	if len(secret) != accessTokenLen || !strings.HasPrefix(secret, accessTokenPrefix) {
		return "", "", false
	}
	id = secret[len(accessTokenPrefix) : len(accessTokenPrefix)+accessTokenIDLen]
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", "", false
		}
	}
	rest := secret[len(accessTokenPrefix)+accessTokenIDLen:]
	if rest[0] != '_' {
		return "", "", false
	}
	// Strict: the unused low bits of the last character must be zero, so
	// that one token has one spelling. No '\r' or '\n' can pass the
	// alphabet check below, which the decoder would otherwise skip.
	for i := 1; i < len(rest); i++ {
		if c := rest[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return "", "", false
		}
	}
	if raw, err := base64.RawURLEncoding.Strict().DecodeString(rest[1:]); err != nil || len(raw) != 32 {
		return "", "", false
	}
	return id, HashAccessToken(secret), true
}

// HashAccessToken is the stored form of an access token secret: the hex
// SHA-256 of the whole secret string.
func HashAccessToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
