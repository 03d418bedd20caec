package main

import (
	"slices"
	"testing"
)

// TestServeSyncSetting checks the repeatable --sync flag and its
// comma-separated environment twin.
func TestServeSyncSetting(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{"flags repeat", "", []string{"--sync", "acme/*:v*", "--sync", "library/*"}, []string{"acme/*:v*", "library/*"}},
		{"env list", "acme/*:v*, library/*", nil, []string{"acme/*:v*", "library/*"}},
		{"flag beats env", "x/*", []string{"--sync", "y/*"}, []string{"y/*"}},
		{"none", "", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HUBMESH_SYNC", tc.env)
			cmd := newServeCmd()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadServeConfig(cmd.Flags())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Sync, tc.want) {
				t.Errorf("Sync = %q, want %q", cfg.Sync, tc.want)
			}
		})
	}
	cmd := newServeCmd()
	if err := cmd.ParseFlags([]string{"--sync", "acme/[:v1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadServeConfig(cmd.Flags()); err == nil {
		t.Error("a bad sync pattern was accepted")
	}
}
