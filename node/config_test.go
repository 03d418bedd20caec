package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{DataDir: " ", HTTPAddr: "nope", P2PAddrs: []string{"/ip4/1.2.3.4/bogus"}, LogLevel: "loud", LogFormat: "xml"}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{"data-dir", "http-addr", "p2p-addr", "log-level", "log-format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{
			name: "overrides only what it names",
			yaml: "data_dir: /srv/hub\np2p_addrs: [/ip4/127.0.0.1/tcp/0]\n",
			check: func(t *testing.T, c Config) {
				if c.DataDir != "/srv/hub" || len(c.P2PAddrs) != 1 || c.HTTPAddr != Default().HTTPAddr {
					t.Errorf("got %+v", c)
				}
			},
		},
		{name: "empty file changes nothing", yaml: "", check: func(t *testing.T, c Config) {
			if c.DataDir != Default().DataDir {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "unknown key is an error", yaml: "data_dri: x\n", wantErr: "data_dri"},
		{name: "wrong type is an error", yaml: "p2p_addrs: 5\n", wantErr: "config file"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "c"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c := Default()
			err := c.LoadFile(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadFile = %v, want error mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
	if err := (&Config{}).LoadFile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadFile of a missing file succeeded")
	}
}

func TestAddrFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "addr.json")
	want := Addrs{HTTP: "127.0.0.1:5000", P2P: []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo"}, PeerID: "12D3Koo"}
	if err := writeAddrFile(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAddrFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.HTTP != want.HTTP || got.PeerID != want.PeerID || len(got.P2P) != 1 || got.P2P[0] != want.P2P[0] {
		t.Errorf("ReadAddrFile = %+v, want %+v", got, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}
