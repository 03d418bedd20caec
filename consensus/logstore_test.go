package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func openTestLogStore(t *testing.T, dir string) *logStore {
	t.Helper()
	s, err := openLogStore(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testLog(i uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: i/10 + 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "entry %d", i)}
	if i%2 == 0 {
		l.Extensions = []byte{byte(i)}
		l.AppendedAt = time.Unix(1700000000, int64(i)).UTC()
	}
	if i%5 == 0 {
		l.Type = raft.LogConfiguration
		l.Data = nil
	}
	return l
}

func equalLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) && a.AppendedAt.Equal(b.AppendedAt)
}

func checkRange(t *testing.T, s *logStore, first, last uint64) {
	t.Helper()
	if got, err := s.FirstIndex(); err != nil || got != first {
		t.Fatalf("FirstIndex = %d, %v; want %d", got, err, first)
	}
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Fatalf("LastIndex = %d, %v; want %d", got, err, last)
	}
}

// TestLogStoreRestart writes entries, closes the store, reopens it and
// compares every entry; then checks DeleteRange across another restart.
func TestLogStoreRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	s := openTestLogStore(t, dir)
	checkRange(t, s, 0, 0)
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty store: %v", err)
	}
	if err := s.StoreLog(testLog(1)); err != nil {
		t.Fatal(err)
	}
	var batch []*raft.Log
	for i := uint64(2); i <= 300; i++ {
		batch = append(batch, testLog(i))
	}
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	s = openTestLogStore(t, dir)
	checkRange(t, s, 1, 300)
	for i := uint64(1); i <= 300; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if want := testLog(i); !equalLog(&got, want) {
			t.Fatalf("entry %d after restart:\n got %+v\nwant %+v", i, got, *want)
		}
	}

	// Compaction deletes a prefix, conflict resolution a suffix.
	if err := s.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(251, 300); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 101, 250)
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s = openTestLogStore(t, dir)
	defer s.close()
	checkRange(t, s, 101, 250)
	for _, i := range []uint64{1, 100, 251, 300} {
		if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) after DeleteRange: %v", i, err)
		}
	}
	if err := s.GetLog(101, &l); err != nil || !equalLog(&l, testLog(101)) {
		t.Fatalf("GetLog(101) = %+v, %v", l, err)
	}
	// Overwriting an index (a follower replacing a conflicting entry).
	repl := testLog(200)
	repl.Term = 99
	if err := s.StoreLogs([]*raft.Log{repl}); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(200, &l); err != nil || l.Term != 99 {
		t.Fatalf("overwritten entry: term %d, %v", l.Term, err)
	}
	// Deleting everything, including the maximum index, leaves it empty.
	if err := s.DeleteRange(0, ^uint64(0)); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 0, 0)
}

// TestStableStore checks the semantics raft relies on: a missing key is an
// error whose text is exactly "not found" (raft's api.go and raft.go compare
// err.Error() with it, as raft-boltdb returns).
func TestStableStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	s := openTestLogStore(t, dir)
	if _, err := s.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get of a missing key: %v, want \"not found\"", err)
	}
	if _, err := s.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("GetUint64 of a missing key: %v, want \"not found\"", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 1, newHclog(testLogger(t), "snap"))
	if err != nil {
		t.Fatal(err)
	}
	if existing, err := raft.HasExistingState(s, s, snaps); err != nil || existing {
		t.Fatalf("HasExistingState on a new store = %v, %v", existing, err)
	}

	if err := s.Set([]byte("LastVoteCand"), []byte("node-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}

	s = openTestLogStore(t, dir)
	defer s.close()
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if v, err := s.Get([]byte("empty")); err != nil || len(v) != 0 {
		t.Fatalf("Get of an empty value = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	if existing, err := raft.HasExistingState(s, s, snaps); err != nil || !existing {
		t.Fatalf("HasExistingState with a term = %v, %v", existing, err)
	}
	// Stable keys and log entries do not collide.
	if err := s.StoreLog(testLog(7)); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, 7, 7)
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("GetUint64 after StoreLog = %d, %v", v, err)
	}
}

func TestDecodeLogRejectsCorruption(t *testing.T) {
	good := encodeLog(testLog(4))
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          good[:10],
		"bad version":    append([]byte{9}, good[1:]...),
		"truncated data": good[:len(good)-3],
		"trailing":       append(append([]byte(nil), good...), 0),
	} {
		var l raft.Log
		if err := decodeLog(b, &l); err == nil {
			t.Errorf("%s: decoded %+v", name, l)
		}
	}
}
