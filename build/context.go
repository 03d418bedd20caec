package build

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// TarContext streams the directory dir as a tar build context for
// Engine.Build. dockerfile is the Dockerfile path relative to dir; it must
// exist in dir, else the error wraps hubmesh.ErrInvalid before anything is
// streamed.
//
// A .dockerignore at the top of dir is honoured: one pattern a line,
// # comments, filepath.Match globs per path component plus ** for any
// number of directories, a pattern also excluding everything below a
// directory it matches, ! for exceptions, the last matching line winning.
// The Dockerfile and .dockerignore are always sent, as docker does. Not
// supported: escapes with \ in patterns and a Dockerfile outside dir.
//
// Regular files, directories and symlinks (as links, never followed) are
// sent, owned by root; other file types are skipped. Closing the reader
// early stops the walk.
func TarContext(dir, dockerfile string) (io.ReadCloser, error) {
	df := path.Clean(filepath.ToSlash(dockerfile))
	if df == "." || df == ".." || strings.HasPrefix(df, "../") || path.IsAbs(df) {
		return nil, fmt.Errorf("build context: dockerfile %q must be a path inside the context: %w", dockerfile, hubmesh.ErrInvalid)
	}
	fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(df)))
	if err != nil {
		return nil, fmt.Errorf("build context: Dockerfile %q not found in the context %q: %w", df, filepath.Base(dir), hubmesh.ErrInvalid)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("build context: Dockerfile %q is a directory: %w", df, hubmesh.ErrInvalid)
	}
	ign, err := readDockerignore(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTar(pw, dir, ign, map[string]bool{df: true, ".dockerignore": true}))
	}()
	return pr, nil
}

func writeTar(w io.Writer, dir string, ign *ignorer, keep map[string]bool) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if !keep[rel] && ign.excluded(rel) {
			if d.IsDir() && !ign.hasExceptions {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular(), info.IsDir():
		default:
			return nil // sockets, devices, fifos
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.Format = tar.FormatPAX
		hdr.AccessTime, hdr.ChangeTime = hdr.ModTime, hdr.ModTime
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	return tw.Close()
}

type ignorePattern struct {
	segs      []string
	exception bool
}

// ignorer applies .dockerignore patterns to slash-separated relative paths.
type ignorer struct {
	patterns      []ignorePattern
	hasExceptions bool
}

func readDockerignore(p string) (*ignorer, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return &ignorer{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("build context: .dockerignore: %w", err)
	}
	defer f.Close()
	return parseDockerignore(f)
}

func parseDockerignore(r io.Reader) (*ignorer, error) {
	ign := &ignorer{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var ip ignorePattern
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			ip.exception, line = true, strings.TrimSpace(rest)
			ign.hasExceptions = true
		}
		line = strings.TrimPrefix(path.Clean(filepath.ToSlash(line)), "/")
		if line == "" || line == "." {
			continue
		}
		ip.segs = strings.Split(line, "/")
		for _, s := range ip.segs {
			if s == "**" {
				continue
			}
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("build context: .dockerignore line %d: bad pattern %q: %w", n, line, hubmesh.ErrInvalid)
			}
		}
		ign.patterns = append(ign.patterns, ip)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("build context: .dockerignore: %w", err)
	}
	return ign, nil
}

// excluded reports whether rel is excluded: the last pattern that matches
// rel or one of its parent directories decides.
func (ign *ignorer) excluded(rel string) bool {
	segs := strings.Split(rel, "/")
	out := false
	for _, p := range ign.patterns {
		for i := 1; i <= len(segs); i++ {
			if matchSegs(p.segs, segs[:i]) {
				out = !p.exception
				break
			}
		}
	}
	return out
}

func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if matchSegs(pat[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
