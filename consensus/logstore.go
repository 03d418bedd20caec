package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/hashicorp/raft"
)

// Key layout of the Raft pebble database (Dir/raft):
//
//	log/<index uint64 BE>   encoded raft.Log (see encodeLog)
//	stable/<key>            raw value of a StableStore key (currentTerm, ...)
var (
	prefixLog    = []byte("log/")
	prefixStable = []byte("stable/")
)

// errKeyNotFound is what raft expects from a StableStore for a missing key:
// it compares err.Error() with "not found" (as raft-boltdb returns).
var errKeyNotFound = errors.New("not found")

// logStore is raft's LogStore and StableStore on one pebble database.
// Every write is committed with Sync.
type logStore struct {
	db *pebble.DB
}

var (
	_ raft.LogStore    = (*logStore)(nil)
	_ raft.StableStore = (*logStore)(nil)
)

func openLogStore(dir string, logger *slog.Logger) (*logStore, error) {
	db, err := openPebble(dir, logger)
	if err != nil {
		return nil, err
	}
	return &logStore{db: db}, nil
}

func (s *logStore) close() error { return s.db.Close() }

func logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefixLog...), index)
}

// FirstIndex implements raft.LogStore; 0 when the log is empty.
func (s *logStore) FirstIndex() (uint64, error) { return s.edgeIndex(true) }

// LastIndex implements raft.LogStore; 0 when the log is empty.
func (s *logStore) LastIndex() (uint64, error) { return s.edgeIndex(false) }

func (s *logStore) edgeIndex(first bool) (uint64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefixLog, UpperBound: prefixEnd(prefixLog)})
	if err != nil {
		return 0, err
	}
	var ok bool
	if first {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	var idx uint64
	if ok {
		idx = binary.BigEndian.Uint64(it.Key()[len(prefixLog):])
	}
	if err := it.Error(); err != nil {
		_ = it.Close()
		return 0, err
	}
	return idx, it.Close()
}

// GetLog implements raft.LogStore; raft.ErrLogNotFound for a missing index.
func (s *logStore) GetLog(index uint64, l *raft.Log) error {
	v, ok, err := getValue(s.db, logKey(index))
	if err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	if !ok {
		return raft.ErrLogNotFound
	}
	if err := decodeLog(v, l); err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (s *logStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: one synced batch.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, l := range logs {
		if err := b.Set(logKey(l.Index), encodeLog(l), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// DeleteRange implements raft.LogStore; min and max are inclusive.
func (s *logStore) DeleteRange(lo, hi uint64) error {
	if lo > hi {
		return nil
	}
	end := prefixEnd(prefixLog)
	if hi < ^uint64(0) {
		end = logKey(hi + 1)
	}
	return s.db.DeleteRange(logKey(lo), end, pebble.Sync)
}

// Set implements raft.StableStore.
func (s *logStore) Set(k, v []byte) error {
	return s.db.Set(append(append([]byte(nil), prefixStable...), k...), v, pebble.Sync)
}

// Get implements raft.StableStore; errKeyNotFound for a missing key.
func (s *logStore) Get(k []byte) ([]byte, error) {
	v, ok, err := getValue(s.db, append(append([]byte(nil), prefixStable...), k...))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errKeyNotFound
	}
	return v, nil
}

// SetUint64 implements raft.StableStore.
func (s *logStore) SetUint64(k []byte, v uint64) error { return s.Set(k, u64(v)) }

// GetUint64 implements raft.StableStore; errKeyNotFound for a missing key.
func (s *logStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable key %q: %d bytes, want 8", k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Log entry encoding, version 1:
//
//	[1 version][8 index][8 term][1 type][1 hasTime][8 appendedAt unix ns if hasTime]
//	[uvarint len][data][uvarint len][extensions]
const logEncodingVersion = 1

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 1+8+8+1+1+8+2*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions))
	b = append(b, logEncodingVersion)
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	if l.AppendedAt.IsZero() {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.BigEndian.AppendUint64(b, uint64(l.AppendedAt.UnixNano()))
	}
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

var errCorruptLog = errors.New("corrupt log entry")

func decodeLog(b []byte, l *raft.Log) error {
	if len(b) < 19 || b[0] != logEncodingVersion {
		return errCorruptLog
	}
	*l = raft.Log{
		Index: binary.BigEndian.Uint64(b[1:]),
		Term:  binary.BigEndian.Uint64(b[9:]),
		Type:  raft.LogType(b[17]),
	}
	rest := b[19:]
	switch b[18] {
	case 0:
	case 1:
		if len(rest) < 8 {
			return errCorruptLog
		}
		l.AppendedAt = time.Unix(0, int64(binary.BigEndian.Uint64(rest)))
		rest = rest[8:]
	default:
		return errCorruptLog
	}
	var err error
	if l.Data, rest, err = readBytes(rest); err != nil {
		return err
	}
	if l.Extensions, rest, err = readBytes(rest); err != nil {
		return err
	}
	if len(rest) != 0 {
		return errCorruptLog
	}
	return nil
}

// readBytes reads a uvarint length and that many bytes; empty reads as nil.
func readBytes(b []byte) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errCorruptLog
	}
	b = b[k:]
	if n == 0 {
		return nil, b, nil
	}
	return b[:n:n], b[n:], nil
}
