package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

func TestJoinToken(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	otherKey := []byte("fedcba9876543210fedcba9876543210")
	now := time.Unix(1_800_000_000, 0)
	good, err := signJoinToken(key, joinClaims{ClusterID: "c1", Role: "voter", Expires: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := verifyJoinToken(key, "c1", good, now); err != nil || c.Role != "voter" {
		t.Fatalf("verify good token = %+v, %v", c, err)
	}
	expired, _ := signJoinToken(key, joinClaims{ClusterID: "c1", Role: "voter", Expires: now.Add(-time.Second).Unix()})
	foreign, _ := signJoinToken(otherKey, joinClaims{ClusterID: "c2", Role: "voter", Expires: now.Add(time.Hour).Unix()})
	forgedKey, _ := signJoinToken(otherKey, joinClaims{ClusterID: "c1", Role: "voter", Expires: now.Add(time.Hour).Unix()})
	parts := strings.Split(good, ".")
	altered := parts[0] + "." + parts[1] + "x." + parts[2]

	tests := []struct {
		name, token, want string
	}{
		{"expired", expired, "expired"},
		{"foreign cluster", foreign, "another cluster"},
		{"signed with another key", forgedKey, "signature is invalid"},
		{"altered payload", altered, "malformed"},
		{"garbage", "hello", "malformed"},
		{"empty", "", "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyJoinToken(key, "c1", tc.token, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify = %v, want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, hubmesh.ErrDenied) {
				t.Errorf("error %v does not wrap ErrDenied", err)
			}
		})
	}
}

func FuzzVerifyJoinToken(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	good, _ := signJoinToken(key, joinClaims{ClusterID: "c1", Role: "voter", Expires: 1 << 40})
	f.Add(good)
	f.Add("hmjt1..")
	f.Add("hmjt1.e30.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := verifyJoinToken(key, "c1", tok, time.Unix(0, 0))
		if err == nil && (c.ClusterID != "c1" || (c.Role != "voter" && c.Role != "mirror")) {
			t.Fatalf("accepted %q with claims %+v", tok, c)
		}
	})
}
