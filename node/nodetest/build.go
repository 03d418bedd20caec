package nodetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// modulePath is the module whose root the harness looks for.
const modulePath = "github.com/hubmesh/hubmesh"

// buildTimeout bounds `go build` of the binary; a cold build of libp2p,
// raft and pebble on a 2-core machine takes well under this.
const buildTimeout = 5 * time.Minute

var build struct {
	once sync.Once
	dir  string // temp dir holding the built binary; removed by Main
	bin  string
	err  error
}

// Main runs the tests of a package that uses this harness and removes the
// binary built for them afterwards. Call it from TestMain:
//
//	func TestMain(m *testing.M) { nodetest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Binary returns the path of the hubmesh binary under test. It is
// $HUBMESH_BIN when set; otherwise the binary is built once per test binary
// (CGO_ENABLED=0, like the release build) from the module that contains the
// working directory. A failed build fails every test that asks for it.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HUBMESH_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("HUBMESH_BIN=%q: %v", p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("HUBMESH_BIN=%q: %v", p, err)
		}
		return abs
	}
	build.once.Do(func() {
		build.bin, build.err = buildBinary(t)
	})
	if build.err != nil {
		t.Fatalf("build hubmesh: %v", build.err)
	}
	return build.bin
}

func buildBinary(t testing.TB) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "hubmesh-bin-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	bin := filepath.Join(dir, "hubmesh")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/hubmesh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hubmesh in %s: %w\n%s", root, err, out.String())
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin, nil
}

// ModuleRoot returns the root directory of the hubmesh module, found by
// walking up from the working directory to the go.mod that declares it.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && declares(b, modulePath) {
			return dir, nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// declares reports whether the go.mod content gomod declares module mod.
func declares(gomod []byte, mod string) bool {
	for line := range bytes.Lines(gomod) {
		f := strings.Fields(string(line))
		if len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == mod {
			return true
		}
	}
	return false
}
