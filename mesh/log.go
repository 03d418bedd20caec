package mesh

import (
	"context"
	"log/slog"

	"github.com/libp2p/go-libp2p/gologshim"
)

// SetLibp2pLogger sends libp2p's own logs at level Warn and above to
// logger. libp2p's loggers are process-wide and pick their handler on
// first use, so main calls this once, before the first NewHost. Without
// it libp2p writes errors to stderr as JSON (tunable with GOLOG_LOG_LEVEL).
func SetLibp2pLogger(logger *slog.Logger) {
	gologshim.SetDefaultHandler(minLevel{Handler: logger.Handler(), min: slog.LevelWarn})
}

// minLevel drops records below min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(attrs), min: h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), min: h.min}
}
