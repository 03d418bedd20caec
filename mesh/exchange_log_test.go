package mesh

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	golog "github.com/ipfs/go-log/v2"
)

func TestSetExchangeLogger(t *testing.T) {
	var buf bytes.Buffer
	SetExchangeLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { SetExchangeLogger(slog.New(slog.DiscardHandler)) })
	l := golog.Logger("hubmesh-test")
	l.Errorw("something broke", "peer", "12D3KooW")
	l.Debugw("noise")
	out := buf.String()
	for _, want := range []string{"level=ERROR", `msg="something broke"`, "peer=12D3KooW", "logger=hubmesh-test"} {
		if !strings.Contains(out, want) {
			t.Errorf("log output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "noise") {
		t.Errorf("debug message logged: %q", out)
	}
}
