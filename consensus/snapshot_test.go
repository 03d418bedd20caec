package consensus

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

func persist(t *testing.T, f *stateMachine) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// restoreInto checks that src's state has keys under every prefix,
// snapshots it, restores the snapshot into dst (whatever dst held before)
// and checks that dst then holds exactly src's state.
func restoreInto(t *testing.T, src, dst *fsmHarness, prefixes ...string) {
	t.Helper()
	want := src.dump()
	for _, p := range prefixes {
		if keysUnder(want, p) == 0 {
			t.Fatalf("nothing under %q", p)
		}
	}
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(persist(t, src.f)))); err != nil {
		t.Fatal(err)
	}
	dst.reopen()
	if got := dst.dump(); !maps.Equal(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
}

// populate gives h a state that uses every kind of key.
func populate(h *fsmHarness, repo string) {
	layer := blobDesc("layer of " + repo)
	h.mustApply(&LinkBlobs{Repo: repo, Blobs: []hubmesh.Descriptor{layer}, Node: "n1"})
	m := imageManifest(repo, "v1", layer)
	h.mustApply(&PutManifest{Manifest: *m, Tags: []string{"1.0", "latest"}})
	ref := imageManifest(repo, "sig")
	ref.Subject = m.Digest
	h.mustApply(&PutManifest{Manifest: *ref})
	h.mustApply(&PutManifest{Manifest: *indexManifest(repo, m), Tags: []string{"multi"}})
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := newFSM(t)
	populate(src, "alice/app")
	populate(src, "bob/app")
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := src.dump()
	// Writes after the capture are not in the snapshot.
	populate(src, "carol/app")
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dst := newFSM(t)
	populate(dst, "dave/app") // state that the restore must discard (an older index)
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := dst.dump(); !maps.Equal(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
	if dst.f.applied.Load() != 8 {
		t.Fatalf("restored applied index %d, want 8", dst.f.applied.Load())
	}
	// The restored state is readable and survives a restart.
	dst.reopen()
	if m, err := dst.f.getManifest("bob/app", "latest"); err != nil || m.Repo != "bob/app" {
		t.Fatalf("read after restore and reopen: %v", err)
	}
	if _, err := dst.f.getManifest("dave/app", "latest"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("pre-restore state survived: %v", err)
	}
	if r, m, b, _ := dst.f.counts(); r != 2 || m != 6 || b != 2 {
		t.Fatalf("counts after restore %d %d %d, want 2 6 2", r, m, b)
	}
	if dst.f.applied.Load() != 8 {
		t.Fatalf("applied after reopen %d, want 8", dst.f.applied.Load())
	}
}

func TestSnapshotRestoreRejectsBadStreamUntouched(t *testing.T) {
	src := newFSM(t)
	populate(src, "alice/app")
	populate(src, "carol/app")
	good := persist(t, src.f)

	for name, stream := range map[string][]byte{
		"empty":       nil,
		"not ours":    []byte("some other snapshot format entirely"),
		"bad version": append(append(append([]byte(nil), snapshotMagic...), 9), good[len(snapshotMagic)+1:]...),
		"truncated":   good[:len(good)-10],
		"no end":      good[:len(good)-1],
	} {
		t.Run(name, func(t *testing.T) {
			dst := newFSM(t)
			populate(dst, "bob/app")
			before := dst.dump()
			if err := dst.f.Restore(io.NopCloser(bytes.NewReader(stream))); err == nil {
				t.Fatal("Restore accepted a bad stream")
			}
			if !maps.Equal(before, dst.dump()) || dst.f.applied.Load() != dst.index {
				t.Fatal("a rejected restore changed the state")
			}
		})
	}
}

// TestSnapshotRestoreKeepsNewerState covers raft restoring the latest
// snapshot on start: the durable FSM is already past it and must not go
// back in time.
func TestSnapshotRestoreKeepsNewerState(t *testing.T) {
	h := newFSM(t)
	populate(h, "alice/app")
	old := persist(t, h.f)
	populate(h, "bob/app")
	before := h.dump()
	h.reopen()
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, h.dump()) || h.f.applied.Load() != h.index {
		t.Fatal("restoring an older snapshot rolled the state back")
	}
}
