package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeConfigPrecedence checks defaults < file < env < flags.
func TestServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hubmesh.yaml")
	if err := os.WriteFile(file, []byte("data_dir: /from/file\nhttp_addr: 127.0.0.1:7001\nlog_level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HUBMESH_HTTP_ADDR", "127.0.0.1:7002")
	t.Setenv("HUBMESH_LOG_LEVEL", "error")

	cmd := newServeCmd()
	if err := cmd.ParseFlags([]string{"--config", file, "--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadServeConfig(cmd.Flags())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/file" {
		t.Errorf("data dir %q: the file should beat the default", cfg.DataDir)
	}
	if cfg.HTTPAddr != "127.0.0.1:7002" {
		t.Errorf("http addr %q: the environment should beat the file", cfg.HTTPAddr)
	}
	if cfg.LogLevel != "debug" {
		t.Errorf("log level %q: the flag should beat the environment", cfg.LogLevel)
	}
	if cfg.LogFormat != "auto" {
		t.Errorf("log format %q: the default should stay", cfg.LogFormat)
	}
}

func TestServeConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad http addr", []string{"--http-addr", "nonsense"}, "http-addr"},
		{"bad multiaddr", []string{"--p2p-addr", "/ip4/x"}, "p2p-addr"},
		{"missing config file", []string{"--config", "/nonexistent/hubmesh.yaml"}, "config file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newServeCmd()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			_, err := loadServeConfig(cmd.Flags())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("loadServeConfig(%v) = %v, want an error mentioning %q", tc.args, err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{"http-addr": "HUBMESH_HTTP_ADDR", "data-dir": "HUBMESH_DATA_DIR", "config": "HUBMESH_CONFIG"} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

// TestServeBuilderFlags checks the builder settings: --builder alone is a
// switch, the Docker host defaults to DOCKER_HOST, and the environment
// twins work.
func TestServeBuilderFlags(t *testing.T) {
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
	t.Setenv("HUBMESH_BUILD_TIMEOUT", "20m")
	cmd := newServeCmd()
	if err := cmd.ParseFlags([]string{"--builder", "--builder-concurrency", "3", "--build-lease", "9s", "--builder-registry", "registry:5000"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadServeConfig(cmd.Flags())
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Builder || cfg.BuilderConcurrency != 3 || cfg.BuildLease.String() != "9s" || cfg.BuilderRegistry != "registry:5000" {
		t.Errorf("builder settings from flags: %+v", cfg)
	}
	if cfg.BuilderDockerHost != "tcp://127.0.0.1:2375" {
		t.Errorf("docker host %q: want DOCKER_HOST", cfg.BuilderDockerHost)
	}
	if cfg.BuildTimeout.String() != "20m0s" {
		t.Errorf("build timeout %s: want the environment's 20m", cfg.BuildTimeout)
	}

	cmd = newServeCmd()
	if err := cmd.ParseFlags([]string{"--builder=false"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = loadServeConfig(cmd.Flags()); err != nil || cfg.Builder {
		t.Errorf("--builder=false: builder %v, %v", cfg.Builder, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--builder-concurrency", "0"}, "builder-concurrency"},
		{[]string{"--build-lease", "10ms"}, "build-lease"},
		{[]string{"--build-timeout", "soon"}, "build-timeout"},
		{[]string{"--builder", "--builder-docker-host", "ftp://x"}, "builder-docker-host"},
		{[]string{"--builder-registry", "http://x/y"}, "builder-registry"},
	} {
		cmd := newServeCmd()
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := loadServeConfig(cmd.Flags())
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("loadServeConfig(%v) = %v, want one line mentioning %q", tc.args, err, tc.want)
		}
	}
}
