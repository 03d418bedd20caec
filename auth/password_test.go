package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/hubmesh/hubmesh"
)

// testHash is one real hash, computed once: argon2id at the production
// cost takes tens of milliseconds (much more under -race).
var testHash = sync.OnceValue(func() string {
	h, err := HashPassword("correct horse")
	if err != nil {
		panic(err)
	}
	return h
})

// phc builds a PHC string with the given parameters for password pw.
func phc(pw string, m, t uint32, p uint8, salt []byte, keyLen uint32) string {
	key := argon2.IDKey([]byte(pw), salt, t, m, p, keyLen)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

func TestHashPassword(t *testing.T) {
	t.Parallel()
	h := testHash()
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !re.MatchString(h) {
		t.Fatalf("hash %q does not have the expected PHC shape", h)
	}
	if !CheckPassword(h, "correct horse") {
		t.Fatal("right password refused")
	}
	for _, wrong := range []string{"correct horsE", "correct horse ", "", "correct"} {
		if CheckPassword(h, wrong) {
			t.Errorf("wrong password %q accepted", wrong)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", maxPasswordLen+1)} {
		if _, err := HashPassword(bad); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("HashPassword(%d bytes) err = %v, want ErrInvalid", len(bad), err)
		}
	}
}

func TestHashPasswordSalted(t *testing.T) {
	t.Parallel()
	pw := strings.Repeat("p", maxPasswordLen) // the longest accepted
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if h == testHash() || !CheckPassword(h, pw) {
		t.Fatalf("hash of a long password: %q", h)
	}
	if CheckPassword(h, pw+"p") {
		t.Fatal("password over the limit accepted")
	}
}

func TestCheckPasswordParams(t *testing.T) {
	t.Parallel()
	salt := []byte("0123456789abcdef")
	tests := []struct {
		name string
		phc  string
		want bool
	}{
		{"cheap params verify", phc("pw", 64, 1, 1, salt, 32), true},
		{"two lanes", phc("pw", 64, 1, 2, salt, 32), true},
		{"short salt and key", phc("pw", 64, 1, 1, salt[:8], 16), true},
		{"wrong password", phc("other", 64, 1, 1, salt, 32), false},
		{"memory above bound", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "m=64,", "m=262145,", 1), false},
		{"time above bound", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "t=1,", "t=11,", 1), false},
		{"lanes above bound", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "p=1$", "p=9$", 1), false},
		{"memory below 8p", strings.Replace(phc("pw", 64, 1, 2, salt, 32), "m=64,", "m=15,", 1), false},
		{"zero time", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "t=1,", "t=0,", 1), false},
		{"zero lanes", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "p=1$", "p=0$", 1), false},
		{"huge memory", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "m=64,", "m=4294967295,", 1), false},
		{"overflowing memory", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "m=64,", "m=99999999999999999999,", 1), false},
		{"leading zero", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "m=64,", "m=064,", 1), false},
		{"sign", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "m=64,", "m=+64,", 1), false},
		{"params reordered", strings.Replace(phc("pw", 64, 1, 1, salt, 32), "m=64,t=1,p=1", "t=1,m=64,p=1", 1), false},
		{"salt too short", phc("pw", 64, 1, 1, salt[:7], 32), false},
		{"key too short", phc("pw", 64, 1, 1, salt, 15), false},
		{"padded base64", phc("pw", 64, 1, 1, salt, 32) + "=", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckPassword(tt.phc, "pw"); got != tt.want {
				t.Fatalf("CheckPassword(%q, pw) = %v, want %v", tt.phc, got, tt.want)
			}
		})
	}
}

func TestCheckPasswordMalformed(t *testing.T) {
	t.Parallel()
	good := testHash()
	f := strings.Split(good, "$")
	tests := []string{
		"",
		"$",
		"$$$$$",
		"correct horse",
		"$argon2id$",
		"$argon2i$v=19$m=19456,t=2,p=1$" + f[4] + "$" + f[5],
		"$argon2d$v=19$m=19456,t=2,p=1$" + f[4] + "$" + f[5],
		"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"$argon2id$v=16$m=19456,t=2,p=1$" + f[4] + "$" + f[5],
		"$argon2id$m=19456,t=2,p=1$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=19456,t=2$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=19456,t=2,p=1,k=1$" + f[4] + "$" + f[5],
		"$argon2id$v=19$m=19456,t=2,p=1$" + f[4],
		"$argon2id$v=19$m=19456,t=2,p=1$" + f[4] + "$" + f[5] + "$",
		"$argon2id$v=19$m=19456,t=2,p=1$$" + f[5],
		"$argon2id$v=19$m=19456,t=2,p=1$" + f[4] + "$",
		"$argon2id$v=19$m=19456,t=2,p=1$" + f[4] + "!$" + f[5],
		"$argon2id$v=19$m=19456,t=2,p=1$" + f[4] + "$" + f[5][:10] + "\n" + f[5][10:],
		"x" + good,
		good + " ",
		strings.ToUpper(good),
		good + strings.Repeat("A", 600),
	}
	for i, phc := range tests {
		if CheckPassword(phc, "correct horse") {
			t.Errorf("%d: malformed %q accepted", i, phc)
		}
	}
}
