package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/registryapi"
)

// Build logs. The builder running a build writes its log to
// <data-dir>/builds/<id>.log; readers on that node follow the file, readers
// on other nodes ask the builder over buildLogProtocol. When the build
// finishes the log is stored as a blob (text, sha256) of the build's
// repository, replicated like pushed blobs, and named in the build record
// (LogDigest, LogSize); the file is removed. The log of a build that ends
// without a record of its own (cancelled, lease lost) stays readable on
// its builder for buildLogKeep.
const (
	dirBuilds = "builds"

	// buildLogProtocol carries buildLogRequest/buildLogResponse.
	buildLogProtocol = "/hubmesh/buildlog/1.0.0"
	// buildLogChunk bounds the data of one answer; buildLogMaxWait bounds
	// how long the builder holds a request while nothing new is written.
	buildLogChunk   = 256 << 10
	buildLogMaxWait = 10 * time.Second
	// maxBuildLog bounds the log of one build: output beyond it is dropped
	// (a build that prints without end must not fill the disk).
	maxBuildLog = 64 << 20
	// buildLogKeep is how long an unrecorded log stays on its builder.
	buildLogKeep = time.Hour
	// buildLogMediaType is the media type of the stored log blob.
	buildLogMediaType = "text/plain; charset=utf-8"
	// buildLogRecheck is how often a follower looks at the build record
	// again while no log is being written (queued, between attempts).
	buildLogRecheck = 500 * time.Millisecond
)

var truncatedNote = []byte("\n==> log truncated: a build log keeps at most 64 MiB\n")

// liveLog is the log file of one attempt at a build, while it is written
// and until it is removed.
type liveLog struct {
	id      string
	attempt int
	path    string

	mu        sync.Mutex
	f         *os.File // nil once finished
	size      int64
	digester  digest.Digester
	werr      error // the first write error; later writes are dropped
	truncated bool
	done      bool
	ended     time.Time
	changed   chan struct{} // closed (and replaced) at each write and at the end
}

// Write appends p to the log. It never fails: the log must not fail the
// build; a write error is remembered and the rest dropped.
func (l *liveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	if l.done || l.werr != nil || l.truncated {
		return n, nil
	}
	if room := maxBuildLog - int64(len(truncatedNote)) - l.size; int64(len(p)) > room {
		p = append(p[:max(room, 0):max(room, 0)], truncatedNote...)
		l.truncated = true
	}
	if _, err := l.f.Write(p); err != nil {
		l.werr = err
		return n, nil
	}
	l.digester.Hash().Write(p)
	l.size += int64(len(p))
	l.notify()
	return n, nil
}

// Printf writes one line to the log.
func (l *liveLog) Printf(format string, args ...any) {
	fmt.Fprintf(l, format+"\n", args...)
}

func (l *liveLog) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// finish ends the log: nothing more is written, followers reach its end.
// It returns the digest and size of the whole log.
func (l *liveLog) finish() (digest.Digest, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return l.digester.Digest(), l.size, l.werr
	}
	l.done, l.ended = true, time.Now()
	if l.werr == nil {
		l.werr = l.f.Sync()
	}
	if err := l.f.Close(); err != nil && l.werr == nil {
		l.werr = err
	}
	l.f = nil
	l.notify()
	return l.digester.Digest(), l.size, l.werr
}

// read returns up to limit bytes from offset, whether the log has ended
// and nothing is left after them, and a channel closed at the next change.
func (l *liveLog) read(offset int64, limit int) ([]byte, bool, <-chan struct{}, error) {
	l.mu.Lock()
	size, done, changed := l.size, l.done, l.changed
	l.mu.Unlock()
	if offset >= size {
		return nil, done, changed, nil
	}
	f, err := os.Open(l.path)
	if err != nil {
		return nil, false, changed, err
	}
	defer f.Close()
	buf := make([]byte, min(int64(limit), size-offset))
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, changed, err
	}
	return buf[:n], done && offset+int64(n) >= size, changed, nil
}

// copyTo writes the log from offset to w: what there is now, or with
// follow until the log ends or ctx ends. It returns the offset reached and
// whether the log ended there.
func (l *liveLog) copyTo(ctx context.Context, offset int64, follow bool, w io.Writer) (int64, bool, error) {
	for {
		data, done, changed, err := l.read(offset, buildLogChunk)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return offset, false, nil // removed meanwhile: the record names the stored log
			}
			return offset, false, err
		}
		if len(data) > 0 {
			if _, err := w.Write(data); err != nil {
				return offset, false, err
			}
			flush(w)
			offset += int64(len(data))
		}
		if done {
			return offset, true, nil
		}
		if len(data) > 0 {
			continue
		}
		if !follow {
			return offset, false, nil
		}
		select {
		case <-ctx.Done():
			return offset, false, ctx.Err()
		case <-changed:
		}
	}
}

// flush pushes what w buffered to the client, if w can.
func flush(w io.Writer) {
	switch f := w.(type) {
	case http.Flusher:
		f.Flush()
	case interface{ Flush() error }:
		_ = f.Flush()
	}
}

// buildLogs are the live logs of the builds this node runs.
type buildLogs struct {
	dir string

	mu   sync.Mutex
	logs map[string]*liveLog
}

func newBuildLogs(dir string) *buildLogs {
	return &buildLogs{dir: dir, logs: map[string]*liveLog{}}
}

// reset removes every log file: at a builder's start none is live.
func (s *buildLogs) reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") && s.logs[strings.TrimSuffix(e.Name(), ".log")] == nil {
			if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// create starts the log of an attempt at build id, replacing any earlier
// log of that build.
func (s *buildLogs) create(id string, attempt int) (*liveLog, error) {
	if !isBuildID(id) {
		return nil, fmt.Errorf("build id %q: %w", id, hubmesh.ErrInvalid)
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.logs[id]; old != nil {
		_, _, _ = old.finish()
	}
	p := filepath.Join(s.dir, id+".log")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	l := &liveLog{id: id, attempt: attempt, path: p, f: f, digester: digest.Canonical.Digester(), changed: make(chan struct{})}
	s.logs[id] = l
	return l, nil
}

// get returns the log of build id on this node, or nil.
func (s *buildLogs) get(id string) *liveLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs[id]
}

// remove forgets l and deletes its file (l must be finished).
func (s *buildLogs) remove(l *liveLog) {
	s.mu.Lock()
	if s.logs[l.id] == l {
		delete(s.logs, l.id)
	}
	s.mu.Unlock()
	_ = os.Remove(l.path)
}

// sweep removes the finished logs that ended before cutoff.
func (s *buildLogs) sweep(cutoff time.Time) {
	var old []*liveLog
	s.mu.Lock()
	for _, l := range s.logs {
		l.mu.Lock()
		if l.done && l.ended.Before(cutoff) {
			old = append(old, l)
		}
		l.mu.Unlock()
	}
	s.mu.Unlock()
	for _, l := range old {
		s.remove(l)
	}
}

// isBuildID reports whether id has the shape the metadata plane gives
// build IDs: hex digits.
func isBuildID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// buildLogRequest asks the builder of a build for its log.
type buildLogRequest struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
	Offset  int64  `json:"offset"`
	// WaitMs: when nothing is there after Offset yet, wait up to this long
	// (at most buildLogMaxWait) for more.
	WaitMs int64 `json:"wait_ms"`
}

// buildLogResponse is up to buildLogChunk bytes of the log.
type buildLogResponse struct {
	Data []byte `json:"data,omitempty"`
	// Done: the log has ended and Data reaches its end.
	Done bool `json:"done,omitempty"`
	// Gone: this node has no log of that attempt (any more).
	Gone bool `json:"gone,omitempty"`
}

// serveRPC answers buildLogProtocol requests from other members.
func (s *buildLogs) serveRPC(ctx context.Context, _ string, raw []byte) ([]byte, error) {
	var req buildLogRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("build log request: %v: %w", err, hubmesh.ErrInvalid)
	}
	if !isBuildID(req.ID) || req.Offset < 0 {
		return nil, fmt.Errorf("build log request: bad id or offset: %w", hubmesh.ErrInvalid)
	}
	l := s.get(req.ID)
	if l == nil || (req.Attempt != 0 && l.attempt != req.Attempt) {
		return json.Marshal(buildLogResponse{Gone: true})
	}
	data, done, changed, err := l.read(req.Offset, buildLogChunk)
	if len(data) == 0 && !done && err == nil && req.WaitMs > 0 {
		t := time.NewTimer(min(time.Duration(req.WaitMs)*time.Millisecond, buildLogMaxWait))
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-changed:
		}
		t.Stop()
		data, done, _, err = l.read(req.Offset, buildLogChunk)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return json.Marshal(buildLogResponse{Gone: true})
	}
	if err != nil {
		return nil, fmt.Errorf("build log %s: %w", req.ID, err)
	}
	return json.Marshal(buildLogResponse{Data: data, Done: done})
}

// buildsAPI implements registryapi.Builds: the build records and settings
// of the metadata plane, and the logs, wherever they are.
type buildsAPI struct {
	*consensus.Node
	self  string
	logs  *buildLogs
	blobs interface {
		Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error)
	}
	host    *mesh.Host
	recheck time.Duration
}

var _ registryapi.Builds = (*buildsAPI)(nil)

// BuildLog implements registryapi.Builds.
func (a *buildsAPI) BuildLog(ctx context.Context, b hubmesh.Build, offset int64, follow bool, w io.Writer) error {
	if offset < 0 {
		return fmt.Errorf("log offset %d: %w", offset, hubmesh.ErrInvalid)
	}
	attempt, wrote := b.Attempt, false
	for {
		if b.Attempt != attempt {
			// Another builder took the build over: its log starts afresh.
			attempt, offset = b.Attempt, 0
		}
		if b.LogDigest != "" {
			return a.copyStored(ctx, b, offset, w)
		}
		var (
			found, ended bool
			err          error
		)
		switch {
		case b.Builder == "":
			// Not claimed yet: no log anywhere.
		case b.Builder == a.self:
			if l := a.logs.get(b.ID); l != nil && l.attempt == b.Attempt {
				found = true
				offset, ended, err = l.copyTo(ctx, offset, follow, w)
			}
		default:
			found, offset, ended, err = a.remoteLog(ctx, b, offset, follow, w)
		}
		if err != nil {
			return err
		}
		wrote = wrote || found
		finished := hubmesh.BuildFinished(b.State)
		if !follow || (finished && (ended || !found)) {
			if !wrote {
				if finished {
					return fmt.Errorf("build %s: no log was kept: %w", b.ID, hubmesh.ErrNotFound)
				}
				return fmt.Errorf("build %s: no log yet: %w", b.ID, hubmesh.ErrNotFound)
			}
			return nil
		}
		if !found || ended {
			// Nothing being written here: wait, then see where the build is.
			t := time.NewTimer(a.recheck)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		nb, err := a.Node.Build(ctx, b.ID)
		if err != nil {
			return err
		}
		b = nb
	}
}

// copyStored writes the stored log of a finished build from offset on.
func (a *buildsAPI) copyStored(ctx context.Context, b hubmesh.Build, offset int64, w io.Writer) error {
	d, err := digest.Parse(b.LogDigest)
	if err != nil {
		return fmt.Errorf("build %s: log digest: %w", b.ID, hubmesh.ErrNotFound)
	}
	rc, size, err := a.blobs.Open(ctx, d)
	if err != nil {
		return fmt.Errorf("build %s: log: %w", b.ID, err)
	}
	defer rc.Close()
	if offset >= size {
		return nil
	}
	if offset > 0 {
		if _, err := rc.Seek(offset, io.SeekStart); err != nil {
			return fmt.Errorf("build %s: log: %w", b.ID, err)
		}
	}
	_, err = io.Copy(w, rc)
	return err
}

// remoteLog copies the log of b from its builder, another node. found is
// false when the builder has no log of that attempt or cannot be reached.
func (a *buildsAPI) remoteLog(ctx context.Context, b hubmesh.Build, offset int64, follow bool, w io.Writer) (found bool, _ int64, ended bool, _ error) {
	for {
		req := buildLogRequest{ID: b.ID, Attempt: b.Attempt, Offset: offset}
		if follow {
			req.WaitMs = buildLogMaxWait.Milliseconds()
		}
		raw, _ := json.Marshal(req)
		cctx, cancel := context.WithTimeout(ctx, buildLogMaxWait+10*time.Second)
		out, err := a.host.Call(cctx, b.Builder, buildLogProtocol, raw)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return found, offset, false, ctx.Err()
			}
			return found, offset, false, nil // builder unreachable: look at the record again
		}
		var resp buildLogResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			return found, offset, false, fmt.Errorf("build %s: log from %s: %v: %w", b.ID, b.Builder, err, hubmesh.ErrUnavailable)
		}
		if resp.Gone {
			return found, offset, false, nil
		}
		found = true
		if len(resp.Data) > 0 {
			if _, err := w.Write(resp.Data); err != nil {
				return found, offset, false, err
			}
			flush(w)
			offset += int64(len(resp.Data))
		}
		if resp.Done {
			return found, offset, true, nil
		}
		if len(resp.Data) == 0 {
			// Nothing now (or nothing within the long poll): let the
			// caller look at the record, then ask again.
			return found, offset, false, nil
		}
	}
}
