package consensus

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/hashicorp/go-hclog"
)

// Attribute keys this package adds to log records.
const (
	attrLogger = "logger"
	attrDir    = "dir"
)

// slogLevelTrace is below slog.LevelDebug, where hclog's Trace lands.
const slogLevelTrace = slog.LevelDebug - 4

// hclogAdapter is an hclog.Logger that writes to a slog.Logger, so that
// raft's logs go wherever the node's logs go.
type hclogAdapter struct {
	base    *slog.Logger // the configured logger with the implied args
	l       *slog.Logger // base with the logger name attribute
	name    string
	implied []any
	level   *atomic.Int32 // hclog.Level; shared by loggers derived with With/Named
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclog(l *slog.Logger, name string) *hclogAdapter {
	lvl := new(atomic.Int32)
	lvl.Store(int32(hclog.Trace)) // the slog handler does the filtering
	a := &hclogAdapter{base: l, level: lvl}
	return a.named(name, true)
}

func toSlogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slogLevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) enabled(l hclog.Level) bool {
	if l < hclog.Level(a.level.Load()) {
		return false
	}
	return a.l.Enabled(context.Background(), toSlogLevel(l))
}

// Log implements hclog.Logger.
func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || !a.enabled(level) {
		return
	}
	a.l.Log(context.Background(), toSlogLevel(level), msg, expandFmt(args)...)
}

// expandFmt renders hclog.Fmt values (raft logs configurations with them),
// which slog would otherwise print as a raw slice.
func expandFmt(args []any) []any {
	for i, v := range args {
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	return args
}

// Trace implements hclog.Logger.
func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (a *hclogAdapter) Info(msg string, args ...any) { a.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (a *hclogAdapter) Warn(msg string, args ...any) { a.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

// IsTrace implements hclog.Logger.
func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (a *hclogAdapter) IsInfo() bool { return a.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (a *hclogAdapter) IsWarn() bool { return a.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

// With implements hclog.Logger.
func (a *hclogAdapter) With(args ...any) hclog.Logger {
	base := a.base.With(args...)
	return &hclogAdapter{
		base:    base,
		l:       base.With(attrLogger, a.name),
		name:    a.name,
		implied: append(append([]any(nil), a.implied...), args...),
		level:   a.level,
	}
}

// Name implements hclog.Logger.
func (a *hclogAdapter) Name() string { return a.name }

// Named implements hclog.Logger.
func (a *hclogAdapter) Named(name string) hclog.Logger { return a.named(name, false) }

// ResetNamed implements hclog.Logger.
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return a.named(name, true) }

func (a *hclogAdapter) named(name string, reset bool) *hclogAdapter {
	full := name
	if !reset && a.name != "" && name != "" {
		full = a.name + "." + name
	}
	return &hclogAdapter{base: a.base, l: a.base.With(attrLogger, full), name: full, implied: a.implied, level: a.level}
}

// SetLevel implements hclog.Logger.
func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level.Store(int32(level)) }

// GetLevel implements hclog.Logger.
func (a *hclogAdapter) GetLevel() hclog.Level { return hclog.Level(a.level.Load()) }

// StandardLogger implements hclog.Logger.
func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	lvl := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		lvl = toSlogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(a.l.Handler(), lvl)
}

// StandardWriter implements hclog.Logger.
func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(opts).Writer()
}

// pebbleLogger writes pebble's messages to slog. Fatalf is called by pebble
// on unrecoverable corruption and must not return: it logs, then panics.
type pebbleLogger struct{ l *slog.Logger }

// Infof implements pebble.Logger.
func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Info(fmt.Sprintf(format, args...))
}

// Errorf logs an error reported by pebble.
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf implements pebble.Logger.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("pebble fatal error", "error", msg)
	panic("consensus: pebble: " + msg)
}

// openPebble opens (creating if needed) a pebble database in dir.
func openPebble(dir string, logger *slog.Logger) (*pebble.DB, error) {
	l := logger.With(attrLogger, "pebble", attrDir, dir)
	db, err := pebble.Open(dir, &pebble.Options{
		Logger:             pebbleLogger{l},
		FormatMajorVersion: pebble.FormatNewest,
	})
	if err != nil {
		return nil, fmt.Errorf("open pebble %s: %w", dir, err)
	}
	return db, nil
}
