package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func TestParseAuthorization(t *testing.T) {
	t.Parallel()
	b64 := base64.StdEncoding.EncodeToString
	raw := base64.RawStdEncoding.EncodeToString
	tests := []struct {
		name    string
		in      string
		want    Credentials
		wantErr bool
	}{
		{name: "empty", in: "", want: Credentials{}},
		{name: "basic", in: "Basic " + b64([]byte("alice:s3cret")), want: Credentials{Scheme: "basic", Username: "alice", Password: "s3cret"}},
		{name: "basic lower case", in: "basic " + b64([]byte("alice:pw")), want: Credentials{Scheme: "basic", Username: "alice", Password: "pw"}},
		{name: "basic upper case", in: "BASIC " + b64([]byte("alice:pw")), want: Credentials{Scheme: "basic", Username: "alice", Password: "pw"}},
		{name: "basic raw base64", in: "Basic " + raw([]byte("alice:pw")), want: Credentials{Scheme: "basic", Username: "alice", Password: "pw"}},
		{name: "basic colon in password", in: "Basic " + b64([]byte("alice:a:b:c")), want: Credentials{Scheme: "basic", Username: "alice", Password: "a:b:c"}},
		{name: "basic empty password", in: "Basic " + b64([]byte("alice:")), want: Credentials{Scheme: "basic", Username: "alice", Password: ""}},
		{name: "basic extra spaces", in: "Basic   " + b64([]byte("alice:pw")) + " ", want: Credentials{Scheme: "basic", Username: "alice", Password: "pw"}},
		{name: "basic access token", in: "Basic " + b64([]byte("alice:hmp_0123456789abcdef_x")), want: Credentials{Scheme: "basic", Username: "alice", Password: "hmp_0123456789abcdef_x"}},
		{name: "basic unicode password", in: "Basic " + b64([]byte("alice:pässwörd✓")), want: Credentials{Scheme: "basic", Username: "alice", Password: "pässwörd✓"}},
		{name: "bearer", in: "Bearer abc.def-_~+/ghi==", want: Credentials{Scheme: "bearer", Token: "abc.def-_~+/ghi=="}},
		{name: "bearer lower case", in: "bearer tok", want: Credentials{Scheme: "bearer", Token: "tok"}},
		{name: "basic no colon", in: "Basic " + b64([]byte("alice")), wantErr: true},
		{name: "basic empty user", in: "Basic " + b64([]byte(":pw")), wantErr: true},
		{name: "basic empty", in: "Basic ", wantErr: true},
		{name: "basic only scheme", in: "Basic", wantErr: true},
		{name: "basic not base64", in: "Basic !!!", wantErr: true},
		{name: "basic url base64", in: "Basic " + base64.URLEncoding.EncodeToString([]byte("a?>:~~~?>")), wantErr: true},
		{name: "basic newline inside", in: "Basic " + b64([]byte("alice:pw"))[:4] + "\n" + b64([]byte("alice:pw"))[4:], wantErr: true},
		{name: "basic two values", in: "Basic " + b64([]byte("a:b")) + " " + b64([]byte("c:d")), wantErr: true},
		{name: "basic control in user", in: "Basic " + b64([]byte("al\x00ice:pw")), wantErr: true},
		{name: "basic invalid utf8 user", in: "Basic " + b64([]byte("al\xffice:pw")), wantErr: true},
		{name: "bearer empty", in: "Bearer ", wantErr: true},
		{name: "bearer only scheme", in: "Bearer", wantErr: true},
		{name: "bearer only padding", in: "Bearer ==", wantErr: true},
		{name: "bearer space inside", in: "Bearer a b", wantErr: true},
		{name: "bearer comma", in: "Bearer a,b", wantErr: true},
		{name: "bearer padding inside", in: "Bearer a=b", wantErr: true},
		{name: "bearer unicode", in: "Bearer tökén", wantErr: true},
		{name: "digest", in: `Digest username="a"`, wantErr: true},
		{name: "token only", in: "abcdef", wantErr: true},
		{name: "space", in: " ", wantErr: true},
		{name: "tab separated", in: "Basic\t" + b64([]byte("a:b")), wantErr: true},
		{name: "too long", in: "Bearer " + strings.Repeat("a", maxHeaderLen), wantErr: true},
		{name: "longest", in: "Bearer " + strings.Repeat("a", maxHeaderLen-7), want: Credentials{Scheme: "bearer", Token: strings.Repeat("a", maxHeaderLen-7)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.in)
			if tt.wantErr {
				if !errors.Is(err, hubmesh.ErrUnauthenticated) {
					t.Fatalf("ParseAuthorization(%q) = %+v, %v; want ErrUnauthenticated", tt.in, got, err)
				}
				if got != (Credentials{}) {
					t.Fatalf("credentials %+v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAuthorization(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseAuthorization(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}
