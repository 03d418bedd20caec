package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MemAvailable returns MemAvailable from /proc/meminfo in bytes.
func MemAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return ParseKB(b, "MemAvailable")
}

// ParseKB finds "field:   N kB" in a /proc status-like text (status,
// meminfo) and returns N in bytes.
func ParseKB(text []byte, field string) (int64, error) {
	for line := range strings.SplitSeq(string(text), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", field, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no field %s", field)
}

// userHZ is the unit of the CPU times in /proc/PID/stat; the kernel fixes it
// at 100 for user space on every Linux architecture.
const userHZ = 100

// ParseStatCPU returns utime+stime from a /proc/PID/stat line. The command
// name (field 2) may contain spaces and parentheses, so fields are counted
// from the last ')'.
func ParseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after comm", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ListeningPorts returns the TCP ports on which process pid has a listening
// socket, by matching the socket inodes among its file descriptors against
// the LISTEN entries of /proc/PID/net/tcp{,6}. It lets the harness learn
// the port of a server told to listen on port 0 that does not report it.
func ListeningPorts(pid int) ([]int, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		p, err := parseListening(b, inodes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", table, err)
		}
		ports = append(ports, p...)
	}
	return ports, nil
}

// tcpListen is the socket state LISTEN in /proc/net/tcp.
const tcpListen = "0A"

// parseListening returns the local ports of the LISTEN sockets in a
// /proc/net/tcp table whose inode is in inodes.
func parseListening(table []byte, inodes map[string]bool) ([]int, error) {
	var ports []int
	lines := strings.Split(strings.TrimSpace(string(table)), "\n")
	for _, line := range lines[1:] { // header first
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != tcpListen || !inodes[f[9]] {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("bad local address %q", f[1])
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad local port %q: %w", hexPort, err)
		}
		ports = append(ports, int(p))
	}
	return ports, nil
}
