package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/hubmesh/hubmesh"
)

// argon2id parameters for new hashes: OWASP's first recommendation
// (19 MiB, 2 passes, 1 lane).
const (
	argonMemory  = 19456 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters CheckPassword accepts from a stored hash, so
// that a bad record cannot make a login allocate or spin without limit.
const (
	maxArgonMemory  = 262144 // KiB (256 MiB)
	maxArgonTime    = 10
	maxArgonThreads = 8
	minArgonSalt    = 8
	maxArgonSalt    = 64
	minArgonKey     = 16
	maxArgonKey     = 64
)

// maxPasswordLen bounds a password in bytes.
const maxPasswordLen = 1024

// HashPassword hashes pw with argon2id and a fresh random salt and returns
// the PHC string "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>" (unpadded
// standard base64). An empty password or one longer than 1024 bytes is
// refused with an error wrapping hubmesh.ErrInvalid.
func HashPassword(pw string) (string, error) {
	if pw == "" {
		return "", fmt.Errorf("password: %w: empty", hubmesh.ErrInvalid)
	}
	if len(pw) > maxPasswordLen {
		return "", fmt.Errorf("password: %w: longer than %d bytes", hubmesh.ErrInvalid, maxPasswordLen)
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches the argon2id PHC string phc. It
// reads the cost parameters from phc but refuses any above
// m=262144,t=10,p=8; a malformed phc, an empty password or one longer
// than 1024 bytes gives false. The final comparison is constant time.
func CheckPassword(phc, pw string) bool {
	if pw == "" || len(pw) > maxPasswordLen {
		return false
	}
	h, ok := parsePHC(phc)
	if !ok {
		return false
	}
	key := argon2.IDKey([]byte(pw), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

type phcHash struct {
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

// parsePHC reads "$argon2id$v=19$m=M,t=T,p=P$salt$key" strictly: this
// order, decimal numbers without sign or leading zeros, unpadded base64.
func parsePHC(s string) (phcHash, bool) {
	if len(s) > 512 || strings.ContainsAny(s, "\r\n") {
		return phcHash{}, false
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != "v="+strconv.Itoa(argon2.Version) {
		return phcHash{}, false
	}
	ps := strings.Split(f[3], ",")
	if len(ps) != 3 {
		return phcHash{}, false
	}
	m, ok1 := phcParam(ps[0], "m=", maxArgonMemory)
	t, ok2 := phcParam(ps[1], "t=", maxArgonTime)
	p, ok3 := phcParam(ps[2], "p=", maxArgonThreads)
	if !ok1 || !ok2 || !ok3 || m < 8*p {
		return phcHash{}, false
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(f[4])
	if err != nil || len(salt) < minArgonSalt || len(salt) > maxArgonSalt {
		return phcHash{}, false
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(f[5])
	if err != nil || len(key) < minArgonKey || len(key) > maxArgonKey {
		return phcHash{}, false
	}
	return phcHash{memory: m, time: t, threads: uint8(p), salt: salt, key: key}, true
}

// phcParam reads "<prefix><n>" with 1 <= n <= limit.
func phcParam(s, prefix string, limit uint32) (uint32, bool) {
	v, ok := strings.CutPrefix(s, prefix)
	if !ok || v == "" || len(v) > 10 || v[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 || n > uint64(limit) {
		return 0, false
	}
	return uint32(n), true
}
