package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

func TestNewAccessToken(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^hmp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`)
	seen := map[string]bool{}
	for range 50 {
		secret, id, hash, err := NewAccessToken()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(secret) || !strings.HasPrefix(secret, "hmp_"+id+"_") {
			t.Fatalf("secret %q (id %q) has the wrong shape", secret, id)
		}
		sum := sha256.Sum256([]byte(secret))
		if hash != hex.EncodeToString(sum[:]) || hash != HashAccessToken(secret) {
			t.Fatalf("hash %q is not the hex sha256 of the secret", hash)
		}
		gotID, gotHash, ok := ParseAccessToken(secret)
		if !ok || gotID != id || gotHash != hash {
			t.Fatalf("ParseAccessToken(%q) = %q, %q, %v; want %q, %q, true", secret, gotID, gotHash, ok, id, hash)
		}
		if seen[id] || seen[secret] {
			t.Fatalf("token repeated: %q", secret)
		}
		seen[id], seen[secret] = true, true
	}
}

func TestParseAccessToken(t *testing.T) {
	t.Parallel()
	good := "hmp_0123456789abcdef_" + strings.Repeat("A", 42) + "A"
	if _, _, ok := ParseAccessToken(good); !ok {
		t.Fatalf("%q refused", good)
	}
	bad := []string{
		"",
		"hmp_",
		"password",
		"eyJhbGciOiJFUzI1NiJ9.e30.sig",
		good[:len(good)-1],
		good + "A",
		"HMP_" + good[4:],
		"hmq_" + good[4:],
		"hmp_0123456789ABCDEF_" + good[21:],
		"hmp_0123456789abcdeg_" + good[21:],
		"hmp_0123456789abcdef-" + good[21:],
		"hmp_0123456789abcde_A" + good[21:],
		good[:len(good)-1] + "B",        // non-zero unused bits
		good[:len(good)-1] + "=",        // padding
		good[:30] + "+" + good[31:],     // standard, not URL, alphabet
		good[:30] + "\n" + good[31:],    // decoder would skip it
		good[:30] + "é"[:1] + good[31:], // non-ASCII byte
	}
	for _, s := range bad {
		if id, hash, ok := ParseAccessToken(s); ok || id != "" || hash != "" {
			t.Errorf("ParseAccessToken(%q) = %q, %q, %v; want refusal", s, id, hash, ok)
		}
	}
}
