package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The BuildKit build of the Engine API (POST /build?version=2) reports
// progress as {"id":"moby.buildkit.trace","aux":"<base64>"} messages whose
// payload is a moby.buildkit.v1.StatusResponse
// (github.com/moby/buildkit/api/services/control/control.proto). The few
// fields the log needs are decoded here with protowire rather than by
// linking the buildkit module; unknown fields are skipped, so newer daemons
// that add fields still decode.

// Message IDs of the daemon's BuildKit output.
const (
	traceMessageID = "moby.buildkit.trace"
	imageMessageID = "moby.image.id"
)

// Field numbers of control.proto (and google/protobuf/timestamp.proto).
const (
	statusVertexes = 1 // repeated Vertex
	statusStatuses = 2 // repeated VertexStatus
	statusLogs     = 3 // repeated VertexLog
	statusWarnings = 4 // repeated VertexWarning

	vertexDigest    = 1 // string
	vertexName      = 3 // string
	vertexCached    = 4 // bool
	vertexStarted   = 5 // Timestamp
	vertexCompleted = 6 // Timestamp
	vertexError     = 7 // string

	vstatusID        = 1 // string
	vstatusVertex    = 2 // string
	vstatusName      = 3 // string
	vstatusCurrent   = 4 // int64
	vstatusTotal     = 5 // int64
	vstatusCompleted = 8 // Timestamp

	vlogVertex = 1 // string
	vlogStream = 3 // int64: 1 stdout, 2 stderr
	vlogMsg    = 4 // bytes

	vwarnVertex = 1 // string
	vwarnShort  = 3 // bytes

	timestampSeconds = 1 // int64
	timestampNanos   = 2 // int32
)

// bkStatus is the part of a StatusResponse the log shows.
type bkStatus struct {
	vertexes []bkVertex
	statuses []bkVertexStatus
	logs     []bkLog
	warnings []bkWarning
}

type bkVertex struct {
	digest, name, err  string
	cached             bool
	started, completed time.Time // zero when unset
}

type bkVertexStatus struct {
	id, vertex, name string
	current, total   int64
	completed        time.Time
}

type bkLog struct {
	vertex string
	stream int64
	msg    []byte
}

type bkWarning struct {
	vertex string
	short  []byte
}

// decodeStatus decodes a StatusResponse.
func decodeStatus(b []byte) (bkStatus, error) {
	var s bkStatus
	err := eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		var err error
		switch num {
		case statusVertexes:
			var v bkVertex
			v, err = decodeVertex(data)
			s.vertexes = append(s.vertexes, v)
		case statusStatuses:
			var v bkVertexStatus
			v, err = decodeVertexStatus(data)
			s.statuses = append(s.statuses, v)
		case statusLogs:
			var l bkLog
			err = eachField(data, func(num protowire.Number, typ protowire.Type, data []byte, x uint64) error {
				switch {
				case num == vlogVertex && typ == protowire.BytesType:
					l.vertex = string(data)
				case num == vlogStream && typ == protowire.VarintType:
					l.stream = int64(x)
				case num == vlogMsg && typ == protowire.BytesType:
					l.msg = data
				}
				return nil
			})
			s.logs = append(s.logs, l)
		case statusWarnings:
			var w bkWarning
			err = eachField(data, func(num protowire.Number, typ protowire.Type, data []byte, _ uint64) error {
				switch {
				case num == vwarnVertex && typ == protowire.BytesType:
					w.vertex = string(data)
				case num == vwarnShort && typ == protowire.BytesType:
					w.short = data
				}
				return nil
			})
			s.warnings = append(s.warnings, w)
		}
		return err
	})
	return s, err
}

func decodeVertex(b []byte) (bkVertex, error) {
	var v bkVertex
	err := eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, x uint64) error {
		var err error
		switch {
		case num == vertexDigest && typ == protowire.BytesType:
			v.digest = string(data)
		case num == vertexName && typ == protowire.BytesType:
			v.name = string(data)
		case num == vertexCached && typ == protowire.VarintType:
			v.cached = x != 0
		case num == vertexStarted && typ == protowire.BytesType:
			v.started, err = decodeTimestamp(data)
		case num == vertexCompleted && typ == protowire.BytesType:
			v.completed, err = decodeTimestamp(data)
		case num == vertexError && typ == protowire.BytesType:
			v.err = string(data)
		}
		return err
	})
	return v, err
}

func decodeVertexStatus(b []byte) (bkVertexStatus, error) {
	var v bkVertexStatus
	err := eachField(b, func(num protowire.Number, typ protowire.Type, data []byte, x uint64) error {
		var err error
		switch {
		case num == vstatusID && typ == protowire.BytesType:
			v.id = string(data)
		case num == vstatusVertex && typ == protowire.BytesType:
			v.vertex = string(data)
		case num == vstatusName && typ == protowire.BytesType:
			v.name = string(data)
		case num == vstatusCurrent && typ == protowire.VarintType:
			v.current = int64(x)
		case num == vstatusTotal && typ == protowire.VarintType:
			v.total = int64(x)
		case num == vstatusCompleted && typ == protowire.BytesType:
			v.completed, err = decodeTimestamp(data)
		}
		return err
	})
	return v, err
}

func decodeTimestamp(b []byte) (time.Time, error) {
	var sec, nsec int64
	err := eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		switch {
		case num == timestampSeconds && typ == protowire.VarintType:
			sec = int64(x)
		case num == timestampNanos && typ == protowire.VarintType:
			nsec = int64(int32(x))
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(sec, nsec), nil
}

// eachField calls fn for each field of the protobuf message b, with the
// payload of a length-delimited field or the value of a varint; fixed-width
// fields pass their value in x too, groups are skipped.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, data []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			data []byte
			x    uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			data, n = protowire.ConsumeBytes(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			x = uint64(v)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, data, x); err != nil {
			return err
		}
	}
	return nil
}

// Bounds of the progress log's memory.
const (
	maxVertices       = 4096    // vertices remembered; completed ones are dropped first
	maxVertexStatuses = 256     // completed statuses remembered per vertex
	maxPartialLine    = 4 << 10 // an unterminated log line longer than this is written as is
)

// plainProgress renders BuildKit status as a plain-text log in the manner
// of `docker build --progress=plain`: "#N name" when a vertex starts, its
// output lines prefixed "#N ", and "#N CACHED", "#N DONE 0.3s" or
// "#N ERROR: msg" when it ends. Vertices are numbered in the order they
// start.
type plainProgress struct {
	w        io.Writer
	next     int
	vertices map[string]*vertexState
	wrote    bool
}

type vertexState struct {
	num      int
	started  bool // "#N name" written
	done     bool // CACHED, DONE or ERROR written
	statuses map[string]bool
	partial  [3][]byte // unterminated output line, by stream (1 stdout, 2 stderr, 0 other)
}

func newPlainProgress(w io.Writer) *plainProgress {
	if w == nil {
		w = io.Discard
	}
	return &plainProgress{w: w, vertices: make(map[string]*vertexState)}
}

// trace handles the aux payload of a moby.buildkit.trace message: a JSON
// string holding a base64 StatusResponse. A payload that does not decode
// is noted in the log and skipped: the build's outcome does not depend on
// its progress report.
func (p *plainProgress) trace(aux json.RawMessage) {
	var enc string
	if err := json.Unmarshal(aux, &enc); err != nil {
		p.printf("(BuildKit status not understood: %v)\n", err)
		return
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		p.printf("(BuildKit status not understood: %v)\n", err)
		return
	}
	s, err := decodeStatus(raw)
	if err != nil {
		p.printf("(BuildKit status not understood: %v)\n", err)
		return
	}
	p.status(s)
}

func (p *plainProgress) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(p.w, format, args...)
	p.wrote = true
}

// vertex returns the state of digest, making room when the map is full.
// It returns a throwaway state numbered 0 when every remembered vertex is
// still running.
func (p *plainProgress) vertex(digest string) *vertexState {
	if v, ok := p.vertices[digest]; ok {
		return v
	}
	if len(p.vertices) >= maxVertices {
		for d, v := range p.vertices {
			if v.done {
				delete(p.vertices, d)
			}
		}
		if len(p.vertices) >= maxVertices {
			return &vertexState{started: true} // "#0 ..." lines, untracked
		}
	}
	v := &vertexState{}
	p.vertices[digest] = v
	return v
}

// begin writes the header of v once, numbering it.
func (p *plainProgress) begin(v *vertexState, name string) {
	if v.started {
		return
	}
	v.started = true
	p.next++
	v.num = p.next
	if p.wrote {
		p.printf("\n")
	}
	p.printf("#%d %s\n", v.num, name)
}

func (p *plainProgress) status(s bkStatus) {
	for _, sv := range s.vertexes {
		v := p.vertex(sv.digest)
		if v.done {
			continue
		}
		if !sv.started.IsZero() || sv.cached || !sv.completed.IsZero() || sv.err != "" {
			p.begin(v, sv.name)
		}
		switch {
		case sv.cached:
			p.flushLine(v)
			p.printf("#%d CACHED\n", v.num)
			v.done = true
		case sv.err != "":
			p.flushLine(v)
			p.printf("#%d ERROR: %s\n", v.num, sv.err)
			v.done = true
		case !sv.completed.IsZero():
			p.flushLine(v)
			d := time.Duration(0)
			if !sv.started.IsZero() {
				d = sv.completed.Sub(sv.started)
			}
			p.printf("#%d DONE %.1fs\n", v.num, d.Seconds())
			v.done = true
		}
	}
	for _, st := range s.statuses {
		if st.completed.IsZero() {
			continue // progress updates would swamp a stored log
		}
		v := p.vertex(st.vertex)
		if v.statuses == nil {
			v.statuses = make(map[string]bool)
		}
		if v.statuses[st.id] || len(v.statuses) >= maxVertexStatuses {
			continue
		}
		v.statuses[st.id] = true
		p.begin(v, st.vertex)
		name := st.id
		if st.name != "" {
			name = st.name
		}
		switch {
		case st.total > 0:
			p.printf("#%d %s %s / %s done\n", v.num, name, humanBytes(st.current), humanBytes(st.total))
		case st.current > 0:
			p.printf("#%d %s %s done\n", v.num, name, humanBytes(st.current))
		default:
			p.printf("#%d %s done\n", v.num, name)
		}
	}
	for _, l := range s.logs {
		v := p.vertex(l.vertex)
		p.begin(v, l.vertex)
		stream := l.stream
		if stream < 0 || stream >= int64(len(v.partial)) {
			stream = 0
		}
		p.output(v, &v.partial[stream], l.msg)
	}
	for _, w := range s.warnings {
		v := p.vertex(w.vertex)
		p.begin(v, w.vertex)
		p.printf("#%d WARN: %s\n", v.num, strings.TrimSpace(string(w.short)))
	}
}

// output writes the complete lines of msg, keeping an unterminated tail
// in *partial for the next message of the same vertex and stream.
func (p *plainProgress) output(v *vertexState, partial *[]byte, msg []byte) {
	for len(msg) > 0 {
		i := bytes.IndexByte(msg, '\n')
		if i < 0 {
			*partial = append(*partial, msg...)
			if len(*partial) > maxPartialLine {
				p.flushPartial(v, partial)
			}
			return
		}
		line := append(*partial, msg[:i]...)
		*partial = (*partial)[:0]
		msg = msg[i+1:]
		p.printf("#%d %s\n", v.num, strings.TrimRight(string(line), "\r"))
	}
}

func (p *plainProgress) flushPartial(v *vertexState, partial *[]byte) {
	if len(*partial) > 0 {
		p.printf("#%d %s\n", v.num, strings.TrimRight(string(*partial), "\r"))
		*partial = nil
	}
}

// flushLine writes the unterminated lines of v.
func (p *plainProgress) flushLine(v *vertexState) {
	for i := range v.partial {
		p.flushPartial(v, &v.partial[i])
	}
}

// finish writes the unterminated output lines still held, in vertex order.
func (p *plainProgress) finish() {
	var held []*vertexState
	for _, v := range p.vertices {
		for _, b := range v.partial {
			if len(b) > 0 {
				held = append(held, v)
				break
			}
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i].num < held[j].num })
	for _, v := range held {
		p.flushLine(v)
	}
}

func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, suffix := float64(n), "kMGTPE"
	i := -1
	for f >= unit && i < len(suffix)-1 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.2f%cB", f, suffix[i])
}

// sniffLen is how much of a context the BuildKit build of a daemon
// without a session reads to tell a tar from a bare Dockerfile
// (isArchive in buildkit's frontend/dockerfile/builder).
const sniffLen = 1024

// buildKitContext returns the context tar r as that build can take it: a
// tar whose first header does not fit in the sniffed bytes (a PAX tar, as
// TarContext writes, spends them on extended headers) would be read as a
// Dockerfile, so such a stream is sent gzipped, which the sniffing knows
// and the daemon unpacks. stop ends the compression and waits for it.
func buildKitContext(r io.Reader) (body io.Reader, stop func()) {
	br := bufio.NewReaderSize(r, sniffLen)
	head, _ := br.Peek(sniffLen) // a short or failing stream fails later, in the request
	if looksLikeArchive(head) {
		return br, func() {}
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		zw, err := gzip.NewWriterLevel(pw, gzip.BestSpeed)
		if err == nil {
			if _, err = io.Copy(zw, br); err == nil {
				err = zw.Close()
			}
		}
		pw.CloseWithError(err)
	}()
	return pr, func() {
		_ = pr.Close()
		<-done
	}
}

// looksLikeArchive is BuildKit's test: a compressed stream, or a tar
// header readable from head.
func looksLikeArchive(head []byte) bool {
	for _, magic := range [][]byte{
		{0x42, 0x5a, 0x68},                   // bzip2
		{0x1f, 0x8b, 0x08},                   // gzip
		{0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00}, // xz
	} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	_, err := tar.NewReader(bytes.NewReader(head)).Next()
	return err == nil
}
