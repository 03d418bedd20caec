package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble"
	"github.com/hashicorp/raft"
)

// Snapshot stream format, version 1:
//
//	"hubmesh-fsm\x00" [1 version] [8 applied index BE]
//	repeated: [uvarint len(key)][key][uvarint len(value)][value]   (len(key) > 0)
//	[uvarint 0]                                                     end marker
//
// Every FSM key is in the stream except meta/applied, which the header
// carries. raft's file snapshot store adds a CRC over the whole stream.
var snapshotMagic = []byte("hubmesh-fsm\x00")

const snapshotVersion = 1

// restoreBatchSize bounds the memory a restore holds in one pebble batch.
const restoreBatchSize = 16 << 20

// Snapshot implements raft.FSM. It only captures a pebble snapshot; the
// copying happens in Persist, concurrently with further applies.
func (f *stateMachine) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.db.NewSnapshot(), applied: f.applied.Load()}, nil
}

type fsmSnapshot struct {
	snap    *pebble.Snapshot
	applied uint64
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist fsm snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	hdr := append(append([]byte(nil), snapshotMagic...), snapshotVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, s.applied)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	writeField := func(b []byte) error {
		n := binary.PutUvarint(lenBuf[:], uint64(len(b)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	err := scan(s.snap, []byte{}, nil, 0, func(k, v []byte) error {
		if bytes.Equal(k, keyApplied) {
			return nil
		}
		if err := writeField(k); err != nil {
			return err
		}
		return writeField(v)
	})
	if err != nil {
		return err
	}
	if err := writeField(nil); err != nil {
		return err
	}
	return bw.Flush()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() { _ = s.snap.Close() }

// Restore implements raft.FSM: it replaces the whole FSM state, and the
// applied index, with the snapshot's, unless the FSM has already applied
// the snapshot's last entry (then it keeps its newer state). An invalid header is returned as an
// error with the state untouched. Once the old state has been deleted on
// disk, a failure halts the node rather than leave a partial state behind;
// raft restores the latest snapshot again when the node starts.
func (f *stateMachine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := bufio.NewReaderSize(rc, 1<<20)
	hdr := make([]byte, len(snapshotMagic)+1+8)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("restore fsm snapshot: header: %w", err)
	}
	if !bytes.Equal(hdr[:len(snapshotMagic)], snapshotMagic) {
		return errors.New("restore fsm snapshot: not a hubmesh FSM snapshot")
	}
	if v := hdr[len(snapshotMagic)]; v != snapshotVersion {
		return fmt.Errorf("restore fsm snapshot: unknown version %d", v)
	}
	applied := binary.BigEndian.Uint64(hdr[len(snapshotMagic)+1:])
	if cur := f.applied.Load(); applied <= cur {
		// The FSM is durable and already at or past the snapshot: its state
		// is the same committed log prefix applied further. This is the
		// common case when raft restores the latest snapshot on start;
		// skipping it keeps reads from going back in time until the
		// entries after the snapshot have been replayed.
		f.logger.Info("fsm already past the snapshot; not restoring", "snapshot_applied", applied, "applied", cur)
		return nil
	}

	b := f.db.NewBatch()
	committed := false
	fail := func(err error) error {
		_ = b.Close()
		if committed {
			panic(fmt.Sprintf("consensus: fsm: restore failed after deleting the old state: %v", err))
		}
		return fmt.Errorf("restore fsm snapshot: %w", err)
	}
	// Every FSM key starts with a printable ASCII byte.
	if err := b.DeleteRange([]byte{0x00}, []byte{0xff}, nil); err != nil {
		return fail(err)
	}
	for {
		k, err := readField(r)
		if err != nil {
			return fail(err)
		}
		if len(k) == 0 {
			break
		}
		v, err := readField(r)
		if err != nil {
			return fail(err)
		}
		if err := b.Set(k, v, nil); err != nil {
			return fail(err)
		}
		if b.Len() >= restoreBatchSize {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fail(err)
			}
			committed = true
			_ = b.Close()
			b = f.db.NewBatch()
		}
	}
	if err := b.Set(keyApplied, u64(applied), nil); err != nil {
		return fail(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		committed = true // a failed commit may have written part of the batch
		return fail(err)
	}
	_ = b.Close()
	f.repos.reset(applied)
	f.setApplied(applied)
	f.signalMembers()
	return nil
}

// maxSnapshotField bounds one key or value in a snapshot stream; the
// largest value the FSM writes is a manifest of at most 4 MiB plus metadata.
const maxSnapshotField = 64 << 20

func readField(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, noEOF(err)
	}
	if n > maxSnapshotField {
		return nil, fmt.Errorf("field of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, noEOF(err)
	}
	return b, nil
}

// noEOF turns a clean EOF into ErrUnexpectedEOF: the stream ends only at
// its end marker.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
