package consensus

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogBridge(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHclog(l, "raft")

	h.Named("net").With("peer", "node-2").Warn("dial failed", "error", "refused")
	h.Trace("not shown") // below the handler's level
	h.Debug("shown", "n", 1)
	if h.IsTrace() || !h.IsDebug() || h.Name() != "raft" {
		t.Fatalf("IsTrace=%v IsDebug=%v Name=%q", h.IsTrace(), h.IsDebug(), h.Name())
	}
	h.SetLevel(hclog.Error)
	h.Warn("filtered by SetLevel")
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from std logger")

	if n := strings.Count(strings.SplitN(buf.String(), "\n", 2)[0], `"logger"`); n != 1 {
		t.Fatalf("logger attribute appears %d times: %s", n, buf.String())
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 3 {
		t.Fatalf("got %d records, want 3:\n%s", len(recs), buf.String())
	}
	if r := recs[0]; r["level"] != "WARN" || r["msg"] != "dial failed" || r["logger"] != "raft.net" ||
		r["peer"] != "node-2" || r["error"] != "refused" {
		t.Fatalf("record %v", r)
	}
	if r := recs[1]; r["level"] != "DEBUG" || r["msg"] != "shown" || r["logger"] != "raft" {
		t.Fatalf("record %v", r)
	}
	if r := recs[2]; r["level"] != "ERROR" || r["msg"] != "from std logger" {
		t.Fatalf("record %v", r)
	}
}
