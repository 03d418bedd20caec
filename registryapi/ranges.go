package registryapi

import (
	"errors"
	"strconv"
	"strings"
)

// errUnsatisfiable means a Range header asked for bytes that do not exist
// or could not be parsed; the answer is 416.
var errUnsatisfiable = errors.New("range not satisfiable")

// byteRange is a satisfiable single range of a resource.
type byteRange struct {
	Start, Length int64
}

// parseRange interprets the Range header of a GET for a resource of size
// bytes. It returns ok=false when the full resource should be sent: no
// header, a unit other than bytes, or several ranges (which a server may
// ignore). A malformed or unsatisfiable bytes range is errUnsatisfiable.
func parseRange(header string, size int64) (br byteRange, ok bool, err error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return byteRange{}, false, nil
	}
	unit, spec, found := strings.Cut(header, "=")
	if !found {
		return byteRange{}, false, errUnsatisfiable
	}
	if !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return byteRange{}, false, nil
	}
	if strings.Contains(spec, ",") {
		return byteRange{}, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return byteRange{}, false, errUnsatisfiable
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" { // suffix range: the last N bytes
		n, ok := parseDecimal(last)
		if !ok || n == 0 || size == 0 {
			return byteRange{}, false, errUnsatisfiable
		}
		n = min(n, size)
		return byteRange{Start: size - n, Length: n}, true, nil
	}
	start, ok := parseDecimal(first)
	if !ok || start >= size {
		return byteRange{}, false, errUnsatisfiable
	}
	end := size - 1
	if last != "" {
		e, ok := parseDecimal(last)
		if !ok || e < start {
			return byteRange{}, false, errUnsatisfiable
		}
		end = min(e, size-1)
	}
	return byteRange{Start: start, Length: end - start + 1}, true, nil
}

// parseContentRange parses the Content-Range of an upload chunk. The OCI
// form is "<start>-<end>" (inclusive); the HTTP forms "bytes <start>-<end>/
// <total|*>" and "bytes=<start>-<end>" are accepted too.
func parseContentRange(s string) (start, end int64, err error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "bytes"); ok {
		s = strings.TrimLeft(rest, " =")
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		total := s[i+1:]
		if total != "*" {
			if _, ok := parseDecimal(total); !ok {
				return 0, 0, errInvalidContentRange
			}
		}
		s = s[:i]
	}
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, errInvalidContentRange
	}
	start, ok1 := parseDecimal(a)
	end, ok2 := parseDecimal(b)
	if !ok1 || !ok2 || end < start {
		return 0, 0, errInvalidContentRange
	}
	return start, end, nil
}

var errInvalidContentRange = errors.New("invalid Content-Range")

// parseDecimal parses a non-negative decimal that fits an int64, without
// sign, spaces or underscores.
func parseDecimal(s string) (int64, bool) {
	n, err := strconv.ParseUint(s, 10, 63)
	return int64(n), err == nil
}
