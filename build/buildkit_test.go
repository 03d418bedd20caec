package build

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Hand-made StatusResponse parts, numbered as in buildkit's control.proto.

func pbString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func pbBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func pbVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func pbTime(t time.Time) []byte {
	b := pbVarint(nil, 1, uint64(t.Unix()))
	return pbVarint(b, 2, uint64(t.Nanosecond()))
}

type testVertex struct {
	digest, name, err  string
	cached             bool
	started, completed time.Time
}

func (v testVertex) marshal() []byte {
	b := pbString(nil, 1, v.digest)
	b = pbString(b, 2, "sha256:input") // inputs: ignored
	b = pbString(b, 3, v.name)
	if v.cached {
		b = pbVarint(b, 4, 1)
	}
	if !v.started.IsZero() {
		b = pbBytes(b, 5, pbTime(v.started))
	}
	if !v.completed.IsZero() {
		b = pbBytes(b, 6, pbTime(v.completed))
	}
	if v.err != "" {
		b = pbString(b, 7, v.err)
	}
	return pbBytes(b, 8, pbString(nil, 1, "progress group")) // progressGroup: ignored
}

func statusMsg(vertexes []testVertex, rest ...[]byte) []byte {
	var b []byte
	for _, v := range vertexes {
		b = pbBytes(b, 1, v.marshal())
	}
	for _, r := range rest {
		b = append(b, r...)
	}
	return b
}

func vertexStatusMsg(id, vertex string, current, total int64, completed time.Time) []byte {
	b := pbString(nil, 1, id)
	b = pbString(b, 2, vertex)
	b = pbVarint(b, 4, uint64(current))
	b = pbVarint(b, 5, uint64(total))
	b = pbBytes(b, 6, pbTime(completed.Add(-time.Second))) // timestamp: ignored
	if !completed.IsZero() {
		b = pbBytes(b, 8, pbTime(completed))
	}
	return pbBytes(nil, 2, b)
}

func logMsg(vertex string, stream int64, msg string) []byte {
	b := pbString(nil, 1, vertex)
	b = pbBytes(b, 2, pbTime(time.Unix(1, 0)))
	b = pbVarint(b, 3, uint64(stream))
	b = pbBytes(b, 4, []byte(msg))
	return pbBytes(nil, 3, b)
}

func warningMsg(vertex, short string) []byte {
	b := pbString(nil, 1, vertex)
	b = pbVarint(b, 2, 1)
	b = pbBytes(b, 3, []byte(short))
	b = pbBytes(b, 4, []byte("detail"))
	return pbBytes(nil, 4, b)
}

func TestDecodeStatus(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 250_000_000)
	msg := statusMsg([]testVertex{
		{digest: "sha256:a", name: "[1/2] FROM x", started: t0, completed: t0.Add(1500 * time.Millisecond)},
		{digest: "sha256:b", name: "[2/2] RUN false", cached: true, err: "boom"},
	},
		vertexStatusMsg("sha256:layer", "sha256:a", 1500, 2000, t0),
		logMsg("sha256:a", 2, "hello\n"),
		warningMsg("sha256:b", "careful"),
		protowire.AppendFixed32(protowire.AppendTag(nil, 99, protowire.Fixed32Type), 7), // unknown field
	)
	got, err := decodeStatus(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := bkStatus{
		vertexes: []bkVertex{
			{digest: "sha256:a", name: "[1/2] FROM x", started: t0, completed: t0.Add(1500 * time.Millisecond)},
			{digest: "sha256:b", name: "[2/2] RUN false", cached: true, err: "boom"},
		},
		statuses: []bkVertexStatus{{id: "sha256:layer", vertex: "sha256:a", current: 1500, total: 2000, completed: t0}},
		logs:     []bkLog{{vertex: "sha256:a", stream: 2, msg: []byte("hello\n")}},
		warnings: []bkWarning{{vertex: "sha256:b", short: []byte("careful")}},
	}
	for i := range got.vertexes {
		// time.Unix values compare with Equal; normalise for DeepEqual.
		if got.vertexes[i].started.Equal(want.vertexes[i].started) {
			got.vertexes[i].started = want.vertexes[i].started
		}
		if got.vertexes[i].completed.Equal(want.vertexes[i].completed) {
			got.vertexes[i].completed = want.vertexes[i].completed
		}
	}
	if len(got.statuses) == 1 && got.statuses[0].completed.Equal(t0) {
		got.statuses[0].completed = t0
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeStatus =\n%+v\nwant\n%+v", got, want)
	}

	// Every truncation either decodes or fails: never a panic. Cutting
	// inside the last field's length-delimited payload must fail.
	for i := range msg {
		_, _ = decodeStatus(msg[:i])
	}
	if _, err := decodeStatus(msg[:len(msg)-1]); err == nil {
		t.Fatal("a truncated message decoded")
	}
	for _, bad := range [][]byte{{0xff}, {0x0a, 0x05, 0x01}, {0x0a, 0x02, 0x2a, 0x7f}} {
		if _, err := decodeStatus(bad); err == nil {
			t.Errorf("decodeStatus(%x) succeeded", bad)
		}
	}
}

func FuzzDecodeStatus(f *testing.F) {
	t0 := time.Unix(1700000000, 0)
	f.Add(statusMsg([]testVertex{{digest: "d", name: "n", started: t0, completed: t0}}, logMsg("d", 1, "x\n")))
	f.Add([]byte{0x0a, 0x03, 0x2a, 0x01, 0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeStatus(b)
		if err != nil {
			return
		}
		p := newPlainProgress(io.Discard)
		p.status(s)
		p.finish()
	})
}

// traceAux is the aux payload of the daemon's JSON message carrying msg.
func traceAux(msg []byte) json.RawMessage {
	b, _ := json.Marshal(base64.StdEncoding.EncodeToString(msg))
	return b
}

func TestPlainProgress(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	from := testVertex{digest: "sha256:a", name: "[1/3] FROM x"}
	cp := testVertex{digest: "sha256:b", name: "[2/3] COPY . /"}
	run := testVertex{digest: "sha256:c", name: "[3/3] RUN false"}
	steps := [][]byte{
		statusMsg([]testVertex{from, cp, run}), // listed, not started: nothing
		statusMsg([]testVertex{{digest: from.digest, name: from.name, started: t0}}),
		logMsg(from.digest, 1, "hello\npart"),
		logMsg(from.digest, 2, "err\n"),
		logMsg(from.digest, 1, "ial\r\n"),
		vertexStatusMsg("sha256:layer", from.digest, 1500, 2000, time.Time{}), // in progress: dropped
		vertexStatusMsg("sha256:layer", from.digest, 2000, 2000, t0.Add(time.Second)),
		vertexStatusMsg("sha256:layer", from.digest, 2000, 2000, t0.Add(time.Second)), // repeated: once
		statusMsg([]testVertex{{digest: from.digest, name: from.name, started: t0, completed: t0.Add(1500 * time.Millisecond)}}),
		statusMsg([]testVertex{{digest: from.digest, name: from.name, started: t0, completed: t0.Add(1500 * time.Millisecond)}}), // again: nothing
		statusMsg([]testVertex{{digest: cp.digest, name: cp.name, cached: true, started: t0, completed: t0}}),
		statusMsg([]testVertex{{digest: run.digest, name: run.name, started: t0}}),
		logMsg(run.digest, 1, "no newline"),
		warningMsg(run.digest, "something odd\n"),
		statusMsg([]testVertex{{digest: run.digest, name: run.name, started: t0, completed: t0.Add(time.Second), err: "exit code: 1"}}),
		logMsg("sha256:late", 1, "tail without newline"),
	}
	var log bytes.Buffer
	p := newPlainProgress(&log)
	for _, s := range steps {
		p.trace(traceAux(s))
	}
	p.finish()
	want := `#1 [1/3] FROM x
#1 hello
#1 err
#1 partial
#1 sha256:layer 2.00kB / 2.00kB done
#1 DONE 1.5s

#2 [2/3] COPY . /
#2 CACHED

#3 [3/3] RUN false
#3 WARN: something odd
#3 no newline
#3 ERROR: exit code: 1

#4 sha256:late
#4 tail without newline
`
	if log.String() != want {
		t.Fatalf("log:\n%s\nwant:\n%s", log.String(), want)
	}

	log.Reset()
	for _, aux := range []string{`12`, `"not base64!"`, `"` + base64.StdEncoding.EncodeToString([]byte{0xff}) + `"`} {
		p.trace(json.RawMessage(aux))
	}
	if n := strings.Count(log.String(), "(BuildKit status not understood"); n != 3 {
		t.Fatalf("log %q: want three notes of undecodable status", log.String())
	}
}

func TestPlainProgressBounded(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	p := newPlainProgress(io.Discard)
	var running []testVertex
	for i := range maxVertices + 10 {
		running = append(running, testVertex{digest: fmt.Sprintf("sha256:%d", i), name: "step", started: t0})
	}
	p.status(mustDecode(t, statusMsg(running)))
	if len(p.vertices) > maxVertices {
		t.Fatalf("%d vertices remembered, cap %d", len(p.vertices), maxVertices)
	}
	// Finished vertices make room for new ones.
	for i := range running {
		running[i].completed = t0.Add(time.Second)
	}
	p.status(mustDecode(t, statusMsg(running)))
	p.status(mustDecode(t, statusMsg([]testVertex{{digest: "sha256:new", name: "new", started: t0}})))
	if v := p.vertices["sha256:new"]; v == nil || v.num == 0 || len(p.vertices) > maxVertices {
		t.Fatalf("a new vertex after the others finished: %+v, %d remembered", v, len(p.vertices))
	}

	// A line without end is written when it grows past the bound.
	var log bytes.Buffer
	p = newPlainProgress(&log)
	long := strings.Repeat("x", maxPartialLine+1)
	p.status(mustDecode(t, logMsg("sha256:a", 1, long)))
	if !strings.Contains(log.String(), long) {
		t.Fatalf("an overlong unterminated line was held back")
	}
}

func mustDecode(t *testing.T, b []byte) bkStatus {
	t.Helper()
	s, err := decodeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBuildKitContext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM scratch\n", "a.txt": "a"})
	pax, err := TarContext(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	paxBytes, err := io.ReadAll(pax)
	if err != nil {
		t.Fatal(err)
	}
	if looksLikeArchive(paxBytes[:sniffLen]) {
		t.Skip("TarContext no longer writes PAX headers first: nothing to compress")
	}
	body, stop := buildKitContext(bytes.NewReader(paxBytes))
	zr, err := gzip.NewReader(body)
	if err != nil {
		t.Fatalf("a PAX tar is not sent gzipped: %v", err)
	}
	got, err := io.ReadAll(zr)
	stop()
	if err != nil || !bytes.Equal(got, paxBytes) {
		t.Fatalf("gunzipped body: %d bytes, %v; want the %d of the tar", len(got), err, len(paxBytes))
	}

	// A tar whose first header fits the sniffed bytes goes as is.
	ustar := ustarContext(t, 10)
	body, stop = buildKitContext(bytes.NewReader(ustar))
	got, err = io.ReadAll(body)
	stop()
	if err != nil || !bytes.Equal(got, ustar) {
		t.Fatalf("USTAR body changed: %d bytes, %v", len(got), err)
	}

	// stop ends a compression nobody reads.
	_, stop = buildKitContext(bytes.NewReader(append(paxBytes, make([]byte, 1<<20)...)))
	stop()
}

func TestReplayReader(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	rr := &replayReader{r: bytes.NewReader(data)}
	if _, err := io.ReadFull(rr, make([]byte, 1234)); err != nil {
		t.Fatal(err)
	}
	again, ok := rr.replay()
	if !ok {
		t.Fatal("replay refused")
	}
	if n, err := rr.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Fatalf("read after replay = %d, %v; want an error", n, err)
	}
	got, err := io.ReadAll(again)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replayed %d bytes, %v; want %d", len(got), err, len(data))
	}

	big := make([]byte, replayLimit+1)
	rr = &replayReader{r: bytes.NewReader(big)}
	if _, err := io.Copy(io.Discard, rr); err != nil {
		t.Fatal(err)
	}
	if _, ok := rr.replay(); ok || rr.kept != nil {
		t.Fatal("replay of more than replayLimit bytes accepted")
	}
}
