package consensus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// repoRecord is the value of repo/<repo>. Records written before the
// account commands carry only Created.
type repoRecord struct {
	// Created is the Created time of the manifest that created the
	// repository, or the creation time given to CreateRepository.
	Created time.Time `json:"created"`
	// Updated is the Created time of the latest manifest pushed, or of the
	// latest settings change; zero in old records (Created stands for it).
	Updated         time.Time `json:"updated,omitzero"`
	IsPrivate       bool      `json:"is_private,omitempty"`
	Description     string    `json:"description,omitempty"`
	FullDescription string    `json:"full_description,omitempty"`
	// IsOfficial is the repository's own flag (SetOfficial); a repository
	// is also official when its namespace is (official/<ns>).
	IsOfficial  bool  `json:"is_official,omitempty"`
	IsAutomated bool  `json:"is_automated,omitempty"`
	StarCount   int64 `json:"star_count,omitempty"`
	PullCount   int64 `json:"pull_count,omitempty"`
	// Source is set by CreateRepository for repositories a node fills
	// itself (pull-through cache, federation).
	Source string `json:"source,omitempty"`
}

// updated is Updated, or Created in a record that has no Updated.
func (rec *repoRecord) updated() time.Time {
	if rec.Updated.IsZero() {
		return rec.Created
	}
	return rec.Updated
}

// repository is the API view of the record of repo.
func (rec *repoRecord) repository(repo string) hubmesh.Repository {
	return hubmesh.Repository{
		Namespace: hubmesh.RepoOf(repo), Name: repo, IsPrivate: rec.IsPrivate,
		Description: rec.Description, FullDescription: rec.FullDescription,
		Created: rec.Created, Updated: rec.updated(),
		IsOfficial: rec.IsOfficial, IsAutomated: rec.IsAutomated,
		StarCount: rec.StarCount, PullCount: rec.PullCount, Source: rec.Source,
	}
}

// blobRecord is the value of blob/<digest>.
type blobRecord struct {
	Size int64 `json:"size"`
	// Replicas are the IDs of the nodes that stored the content, sorted.
	Replicas []string `json:"replicas,omitempty"`
}

// stateMachine is the Raft FSM: the registry metadata in a pebble database
// laid out as keys.go describes. Raft calls ApplyBatch, Snapshot and
// Restore from one goroutine; reads come from any goroutine through read.
type stateMachine struct {
	db     *pebble.DB
	logger *slog.Logger

	// applied mirrors meta/applied; it is only written by the FSM goroutine.
	applied atomic.Uint64
	// notify is closed (and replaced on demand) whenever applied advances.
	notifyMu sync.Mutex
	notify   chan struct{}
	// membersNotify is closed (and replaced on demand) after a member
	// record or the cluster identity changes; changes carries the same news
	// to the one consumer of Node.Changes, coalesced.
	membersNotify chan struct{}
	changes       chan struct{}
	// repos is the log of changed repository records (social.go).
	repos repoLog
	// hooks wakes the webhook delivery worker (webhook.go); buildWake the
	// builder when a build was queued, cancelled or finished (build.go).
	hooks     notifier
	buildWake notifier

	// mu guards closed: pebble panics on use after Close, so every read
	// holds mu for reading and Close takes it for writing.
	mu     sync.RWMutex
	closed bool
}

var _ raft.BatchingFSM = (*stateMachine)(nil)

// reader is what the read paths need from pebble (a DB, snapshot or batch).
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

func openStateMachine(dir string, logger *slog.Logger) (*stateMachine, error) {
	db, err := openPebble(dir, logger)
	if err != nil {
		return nil, err
	}
	f := &stateMachine{db: db, logger: logger, changes: make(chan struct{}, 1)}
	v, ok, err := getValue(db, keyApplied)
	if err == nil && ok && len(v) != 8 {
		err = fmt.Errorf("corrupt %s: %d bytes", keyApplied, len(v))
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("fsm %s: %w", dir, err)
	}
	f.applied.Store(readU64(v))
	f.repos.reset(f.applied.Load())
	return f, nil
}

// Apply implements raft.FSM.
func (f *stateMachine) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM. The whole group is one pebble
// batch, committed with Sync together with the new applied index. Entries at
// or below the applied index were applied before a restart and are skipped.
// A committed entry that cannot be decoded, or a failed commit, halts the
// node: continuing would let this replica diverge from the others.
func (f *stateMachine) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	start := f.applied.Load()
	last := start
	b := f.db.NewIndexedBatch()
	defer b.Close()
	tx := &txn{b: b}
	for i, l := range logs {
		if l.Index <= last {
			continue
		}
		last = l.Index
		if l.Type != raft.LogCommand {
			continue // configuration changes only advance the applied index
		}
		c, err := Decode(l.Data)
		if err != nil {
			panic(fmt.Sprintf("consensus: fsm: committed entry %d cannot be decoded: %v", l.Index, err))
		}
		tx.index, tx.seq = l.Index, 0
		out[i] = tx.run(c)
	}
	if last == start {
		return out
	}
	if err := b.Set(keyApplied, u64(last), nil); err != nil {
		panic(fmt.Sprintf("consensus: fsm: entry %d: %v", last, err))
	}
	if err := b.Commit(pebble.Sync); err != nil {
		panic(fmt.Sprintf("consensus: fsm: commit up to entry %d: %v", last, err))
	}
	f.repos.add(last, tx.repos)
	f.setApplied(last)
	if tx.membersChanged {
		f.signalMembers()
	}
	if tx.hooksChanged {
		f.hooks.wake()
	}
	if tx.buildsChanged {
		f.buildWake.wake()
	}
	return out
}

// signalMembers wakes the waiters of membersChanged and signals Changes.
func (f *stateMachine) signalMembers() {
	f.notifyMu.Lock()
	if f.membersNotify != nil {
		close(f.membersNotify)
		f.membersNotify = nil
	}
	f.notifyMu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// membersChanged returns a channel that is closed after the next change
// of a member record or of the cluster identity.
func (f *stateMachine) membersChanged() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	if f.membersNotify == nil {
		f.membersNotify = make(chan struct{})
	}
	return f.membersNotify
}

// setApplied publishes a new applied index and wakes its waiters.
func (f *stateMachine) setApplied(i uint64) {
	f.applied.Store(i)
	f.notifyMu.Lock()
	if f.notify != nil {
		close(f.notify)
		f.notify = nil
	}
	f.notifyMu.Unlock()
}

// appliedChanged returns a channel that is closed when applied next advances.
func (f *stateMachine) appliedChanged() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	if f.notify == nil {
		f.notify = make(chan struct{})
	}
	return f.notify
}

// read runs fn against the database unless the state machine is closed.
func (f *stateMachine) read(fn func(r reader) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return fmt.Errorf("metadata store: %w: closed", hubmesh.ErrUnavailable)
	}
	return fn(f.db)
}

func (f *stateMachine) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return f.db.Close()
}

// counts reads the counters kept under meta/count/.
func (f *stateMachine) counts() (repos, manifests, blobs uint64, err error) {
	err = f.read(func(r reader) error {
		for _, c := range []struct {
			k []byte
			v *uint64
		}{{keyCountRepos, &repos}, {keyCountManifests, &manifests}, {keyCountBlobs, &blobs}} {
			v, _, err := getValue(r, c.k)
			if err != nil {
				return err
			}
			*c.v = readU64(v)
		}
		return nil
	})
	return repos, manifests, blobs, err
}

// getValue returns a copy of the value of k and whether it exists.
func getValue(r reader, k []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	return out, true, closer.Close()
}

// txn is the write side of one ApplyBatch: an indexed batch, so a command
// sees the writes of the commands before it in the same group. Read errors
// inside the FSM are I/O failures of the local disk; they halt the node.
type txn struct {
	b      *pebble.Batch
	writes int
	// membersChanged is set by commands that changed a member record or
	// the cluster identity (they set it after writing, so never on failure).
	membersChanged bool
	// repos collects the repositories whose record was written or
	// deleted (the search index follows them, see repoLog).
	repos map[string]struct{}
	// index is the Raft index of the entry being applied, seq numbers the
	// webhook events and builds it creates (nextID); hooksChanged is set
	// when a delivery became due, buildsChanged when a build was queued,
	// cancelled or finished.
	index         uint64
	seq           int
	hooksChanged  bool
	buildsChanged bool
}

// run validates and applies one command and returns its result or error.
// A command that fails must not have written anything.
func (tx *txn) run(c Command) any {
	if err := c.validate(); err != nil {
		return err
	}
	before := tx.writes
	res, err := c.apply(tx)
	if err != nil {
		if tx.writes != before {
			panic(fmt.Sprintf("consensus: fsm: %v wrote %d keys and then failed: %v", c.Type(), tx.writes-before, err))
		}
		return err
	}
	return res
}

func (tx *txn) get(k []byte) ([]byte, bool) {
	v, ok, err := getValue(tx.b, k)
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: read %q: %v", k, err))
	}
	return v, ok
}

func (tx *txn) has(k []byte) bool {
	_, ok := tx.get(k)
	return ok
}

func (tx *txn) getJSON(k []byte, v any) bool {
	raw, ok := tx.get(k)
	if !ok {
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		panic(fmt.Sprintf("consensus: fsm: corrupt value of %q: %v", k, err))
	}
	return true
}

func (tx *txn) set(k, v []byte) {
	if err := tx.b.Set(k, v, nil); err != nil {
		panic(fmt.Sprintf("consensus: fsm: set %q: %v", k, err))
	}
	tx.writes++
	tx.noteRepo(k)
}

func (tx *txn) setJSON(k []byte, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: encode %q: %v", k, err))
	}
	tx.set(k, raw)
}

func (tx *txn) del(k []byte) {
	if err := tx.b.Delete(k, nil); err != nil {
		panic(fmt.Sprintf("consensus: fsm: delete %q: %v", k, err))
	}
	tx.writes++
	tx.noteRepo(k)
}

// keys collects the keys under prefix.
func (tx *txn) keys(prefix []byte) [][]byte {
	var out [][]byte
	err := scan(tx.b, prefix, nil, 0, func(k, _ []byte) error {
		out = append(out, bytes.Clone(k))
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan %q: %v", prefix, err))
	}
	return out
}

func (tx *txn) addCount(k []byte, delta int64) {
	v, _ := tx.get(k)
	tx.set(k, u64(uint64(int64(readU64(v))+delta)))
}

// addReplica creates or updates the blob record of d, adding node to its
// replicas when node is not empty.
func (tx *txn) addReplica(d digest.Digest, size int64, node string) {
	var rec blobRecord
	if !tx.getJSON(blobKey(d), &rec) {
		rec.Size = size
		tx.addCount(keyCountBlobs, 1)
	} else if node == "" {
		return
	}
	if node != "" {
		if i, found := slices.BinarySearch(rec.Replicas, node); !found {
			rec.Replicas = slices.Insert(rec.Replicas, i, node)
		}
	}
	tx.setJSON(blobKey(d), rec)
}

// scan calls fn for each key under prefix that sorts after from (when from
// is not nil), at most limit times when limit > 0.
func scan(r reader, prefix, from []byte, limit int, fn func(k, v []byte) error) error {
	lower := prefix
	if from != nil {
		lower = from
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	n := 0
	for ok := it.First(); ok && (limit <= 0 || n < limit); ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		if err := fn(it.Key(), v); err != nil {
			_ = it.Close()
			return err
		}
		n++
	}
	if err := it.Error(); err != nil {
		_ = it.Close()
		return err
	}
	return it.Close()
}

// encodeManifest lays out a manifest as [uint32 n][n bytes JSON][payload],
// so the payload is stored byte for byte and not base64 inside JSON.
func encodeManifest(m *hubmesh.Manifest) []byte {
	meta := *m
	meta.Payload = nil
	js, err := json.Marshal(&meta)
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: encode manifest %s: %v", m.Digest, err))
	}
	out := make([]byte, 4, 4+len(js)+len(m.Payload))
	binary.BigEndian.PutUint32(out, uint32(len(js)))
	out = append(out, js...)
	return append(out, m.Payload...)
}

func decodeManifest(b []byte) (*hubmesh.Manifest, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("stored manifest of %d bytes", len(b))
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, fmt.Errorf("stored manifest header %d exceeds %d bytes", n, len(b)-4)
	}
	var m hubmesh.Manifest
	if err := json.Unmarshal(b[4:4+n], &m); err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	m.Payload = b[4+n:]
	return &m, nil
}

func (c *PutManifest) apply(tx *txn) (any, error) {
	m := &c.Manifest
	for _, b := range m.Blobs {
		if !tx.has(linkKey(m.Repo, b.Digest)) {
			return nil, fmt.Errorf("manifest %s in %s: blob %s: %w", m.Digest, m.Repo, b.Digest, hubmesh.ErrManifestBlobUnknown)
		}
	}
	for _, ch := range m.Children {
		if !tx.has(manifestKey(m.Repo, ch.Digest)) {
			return nil, fmt.Errorf("manifest %s in %s: child manifest %s: %w", m.Digest, m.Repo, ch.Digest, hubmesh.ErrManifestUnknown)
		}
	}

	var rec repoRecord
	if !tx.getJSON(repoKey(m.Repo), &rec) {
		tx.setJSON(repoKey(m.Repo), repoRecord{
			Created: m.Created, Updated: m.Created,
			IsPrivate: tx.defaultPrivate(hubmesh.RepoOf(m.Repo)),
		})
		tx.addCount(keyCountRepos, 1)
		tx.emit(hubmesh.EventRepoCreate, m.Repo, "", "", c.Pusher, m.Created)
	} else if m.Created.After(rec.updated()) {
		rec.Updated = m.Created
		tx.setJSON(repoKey(m.Repo), rec)
	}
	mk := manifestKey(m.Repo, m.Digest)
	if !tx.has(mk) {
		tx.addCount(keyCountManifests, 1)
	}
	tx.set(mk, encodeManifest(m))
	for _, tag := range c.Tags {
		tk := tagKey(m.Repo, tag)
		if old, ok := tx.get(tk); ok {
			if digest.Digest(old) == m.Digest {
				continue
			}
			tx.del(tagRevKey(m.Repo, digest.Digest(old), tag))
		}
		tx.set(tk, []byte(m.Digest))
		tx.set(tagRevKey(m.Repo, m.Digest, tag), nil)
	}
	if m.Subject != "" {
		tx.setJSON(referrerKey(m.Repo, m.Subject, m.Digest), m.Descriptor())
	}
	for _, tag := range c.Tags {
		tx.emit(hubmesh.EventPush, m.Repo, tag, m.Digest, c.Pusher, m.Created)
	}
	return nil, nil
}

func (c *DeleteManifest) apply(tx *txn) (any, error) {
	mk := manifestKey(c.Repo, c.Digest)
	raw, ok := tx.get(mk)
	if !ok {
		return nil, fmt.Errorf("manifest %s in %s: %w", c.Digest, c.Repo, hubmesh.ErrManifestUnknown)
	}
	m, err := decodeManifest(raw)
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: %q: %v", mk, err))
	}
	revScope := scope(prefixTagRev, c.Repo, c.Digest.String())
	revs := tx.keys(revScope)

	tx.del(mk)
	tx.addCount(keyCountManifests, -1)
	for _, rk := range revs {
		tag := string(rk[len(revScope):])
		tx.del(tagKey(c.Repo, tag))
		tx.del(rk)
		tx.emit(hubmesh.EventTagDelete, c.Repo, tag, c.Digest, c.Actor, c.At)
	}
	if m.Subject != "" {
		tx.del(referrerKey(c.Repo, m.Subject, c.Digest))
	}
	return nil, nil
}

func (c *DeleteTag) apply(tx *txn) (any, error) {
	tk := tagKey(c.Repo, c.Tag)
	d, ok := tx.get(tk)
	if !ok {
		return nil, fmt.Errorf("tag %s:%s: %w", c.Repo, c.Tag, hubmesh.ErrManifestUnknown)
	}
	tx.del(tk)
	tx.del(tagRevKey(c.Repo, digest.Digest(d), c.Tag))
	tx.emit(hubmesh.EventTagDelete, c.Repo, c.Tag, digest.Digest(d), c.Actor, c.At)
	return nil, nil
}

func (c *LinkBlobs) apply(tx *txn) (any, error) {
	sizes := make(map[digest.Digest]int64, len(c.Blobs))
	for _, b := range c.Blobs {
		want, seen := sizes[b.Digest]
		if !seen {
			var rec blobRecord
			if tx.getJSON(blobKey(b.Digest), &rec) {
				want, seen = rec.Size, true
			}
		}
		if seen && want != b.Size {
			return nil, fmt.Errorf("blob %s: %w: size %d, recorded %d", b.Digest, hubmesh.ErrSizeInvalid, b.Size, want)
		}
		sizes[b.Digest] = b.Size
	}

	for _, b := range c.Blobs {
		tx.addReplica(b.Digest, b.Size, c.Node)
		tx.setJSON(linkKey(c.Repo, b.Digest), hubmesh.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size})
	}
	return nil, nil
}

func (c *MountBlob) apply(tx *txn) (any, error) {
	var desc hubmesh.Descriptor
	if c.From != "" {
		if !tx.getJSON(linkKey(c.From, c.Digest), &desc) {
			return nil, fmt.Errorf("mount blob %s from %s: %w", c.Digest, c.From, hubmesh.ErrBlobUnknown)
		}
	} else if !tx.getJSON(linkKey(c.Repo, c.Digest), &desc) {
		var rec blobRecord
		if !tx.getJSON(blobKey(c.Digest), &rec) {
			return nil, fmt.Errorf("mount blob %s: %w", c.Digest, hubmesh.ErrBlobUnknown)
		}
		desc = hubmesh.Descriptor{Digest: c.Digest, Size: rec.Size}
	}

	tx.setJSON(linkKey(c.Repo, c.Digest), desc)
	tx.addReplica(c.Digest, desc.Size, c.Node)
	return desc, nil
}

func (c *UnlinkBlob) apply(tx *txn) (any, error) {
	lk := linkKey(c.Repo, c.Digest)
	if !tx.has(lk) {
		return nil, fmt.Errorf("blob %s in %s: %w", c.Digest, c.Repo, hubmesh.ErrBlobUnknown)
	}
	tx.del(lk)
	return nil, nil
}
