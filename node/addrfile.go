package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Addrs is the content of the addr file: where a running node can be
// reached. Harnesses, compose files and scripts read it instead of guessing
// ports.
type Addrs struct {
	HTTP   string   `json:"http"`
	P2P    []string `json:"p2p"`
	PeerID string   `json:"peer_id"`
}

// writeAddrFile writes a atomically: a reader sees either no file or the
// whole of it.
func writeAddrFile(path string, a Addrs) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temp file next to path, fsyncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("addr file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadAddrFile reads an addr file written by a node.
func ReadAddrFile(path string) (Addrs, error) {
	var a Addrs
	b, err := os.ReadFile(path)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("addr file %s: %w", path, err)
	}
	return a, nil
}
