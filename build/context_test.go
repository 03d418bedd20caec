package build

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/hubmesh/hubmesh"
)

func TestDockerignore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ignore string
		path   string
		want   bool
	}{
		{"", "a", false},
		{"a", "a", true},
		{"a", "a/b/c", true},
		{"/a", "a/b", true},
		{"a", "b/a", false},
		{"*.md", "README.md", true},
		{"*.md", "docs/README.md", false},
		{"**/*.md", "docs/x/README.md", true},
		{"**/*.md", "README.md", true},
		{"docs/**", "docs/a/b", true},
		{"docs\n!docs/keep.md", "docs/keep.md", false},
		{"docs\n!docs/keep.md", "docs/other.md", true},
		{"!a\na", "a", true},
		{"# comment\n\n.git", ".git/HEAD", true},
		{"a?c", "abc", true},
		{"[a-c]x", "bx", true},
	}
	for _, tc := range tests {
		ign, err := parseDockerignore(strings.NewReader(tc.ignore))
		if err != nil {
			t.Fatal(err)
		}
		if got := ign.excluded(tc.path); got != tc.want {
			t.Errorf(".dockerignore %q: excluded(%q) = %v, want %v", tc.ignore, tc.path, got, tc.want)
		}
	}
	if _, err := parseDockerignore(strings.NewReader("[")); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("bad pattern: %v, want ErrInvalid", err)
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func tarNames(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			out[h.Name] = "-> " + h.Linkname
		default:
			out[h.Name] = string(b)
		}
	}
}

func TestTarContext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Dockerfile":        "FROM scratch\n",
		".dockerignore":     "Dockerfile\n.dockerignore\nsecret\n**/*.log\nnode_modules\n",
		"app/main.go":       "package main\n",
		"app/debug.log":     "x",
		"secret":            "s",
		"node_modules/x.js": "x",
	})
	if err := os.Symlink("app/main.go", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	rc, err := TarContext(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	got := tarNames(t, rc)
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	want := []string{".dockerignore", "Dockerfile", "app/", "app/main.go", "link"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("tar holds %v, want %v", names, want)
	}
	if got["link"] != "-> app/main.go" || got["app/main.go"] != "package main\n" {
		t.Fatalf("contents: %q", got)
	}
}

func TestTarContextErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"sub/x": "x"})
	for _, df := range []string{"Dockerfile", "../Dockerfile", "/etc/passwd", "sub", "."} {
		if _, err := TarContext(dir, df); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("TarContext(%q) = %v, want ErrInvalid", df, err)
		}
	}
	if _, err := TarContext(dir, "Dockerfile"); err == nil || !strings.Contains(err.Error(), `Dockerfile "Dockerfile" not found`) {
		t.Errorf("missing Dockerfile message: %v", err)
	}
}

func TestTarContextEarlyClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	files := map[string]string{"Dockerfile": "FROM scratch\n"}
	for i := range 50 {
		files[filepath.Join("d", strings.Repeat("x", i+1))] = strings.Repeat("y", 64<<10)
	}
	writeFiles(t, dir, files)
	rc, err := TarContext(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
}
