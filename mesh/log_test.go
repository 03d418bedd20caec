package mesh

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestMinLevelHandlerDropsChatter(t *testing.T) {
	var buf bytes.Buffer
	h := minLevel{Handler: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), min: slog.LevelWarn}
	l := slog.New(h).With("logger", "swarm2").WithGroup("g")
	l.Debug("dial attempt")
	l.Info("listening")
	l.Warn("listening failed", "on", "/ip4/0.0.0.0/tcp/4001")
	out := buf.String()
	if strings.Contains(out, "dial attempt") || strings.Contains(out, "msg=listening ") {
		t.Errorf("records below Warn passed: %s", out)
	}
	if !strings.Contains(out, "listening failed") || !strings.Contains(out, "logger=swarm2") {
		t.Errorf("Warn record missing or lost its attributes: %q", out)
	}
}
