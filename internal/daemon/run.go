package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"postgate/internal/config"
)

// Options of Run.
type Options struct {
	// ConfigPath is the configuration file; "" runs the embedded default
	// configuration with its state under LocalDir.
	ConfigPath string
	LocalDir   string
	LogOutput  io.Writer // default os.Stderr
	// Signals delivers SIGHUP (reload) and SIGTERM/SIGINT (stop).
	Signals <-chan os.Signal
	// Ready, if set, is called with the daemon once it serves.
	Ready func(*Daemon)
	// ShutdownTimeout bounds draining in-flight requests (default 30s).
	ShutdownTimeout time.Duration
}

// Run loads the configuration, serves until a stop signal, and shuts down.
func Run(opts Options) error {
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	var cfg *config.Config
	if opts.ConfigPath == "" {
		if err := os.MkdirAll(opts.LocalDir, 0o750); err != nil {
			return err
		}
		cfg = config.Local(opts.LocalDir)
		if err := cfg.Validate(); err != nil {
			return err
		}
	} else {
		var err error
		if cfg, err = loadConfig(opts.ConfigPath); err != nil {
			return err
		}
	}
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	out := newLineWriter(opts.LogOutput)
	defer out.Close()
	log := NewLogger(out, cfg.Log.Format, level)
	defer routeStdlog(log)()

	d, err := New(cfg, log, level)
	if err != nil {
		return err
	}
	d.Serve()
	if opts.Ready != nil {
		opts.Ready(d)
	}
	for sig := range opts.Signals {
		if sig == syscall.SIGHUP {
			if opts.ConfigPath == "" {
				log.Info("reload: running the embedded default configuration, nothing to reload")
				continue
			}
			d.Reload(opts.ConfigPath) // errors are logged; the old config stays
			continue
		}
		log.Info("stopping", "signal", sig.String())
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	return d.Shutdown(ctx)
}

func loadConfig(path string) (*config.Config, error) {
	return config.Load(path)
}

// NewLogger returns the daemon's logger: key=value text (greppable like
// Postfix's logs) or JSON.
func NewLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	o := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// routeStdlog sends what libraries print through the standard log package
// to log, as warnings, until the returned func restores the old output.
// go-milter reports that way a connection that broke mid-command or a
// panic in a callback; without this those lines would reach stderr without
// time, level or format.
func routeStdlog(log *slog.Logger) (restore func()) {
	w, flags, prefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	stdlog.SetOutput(stdlogWriter{log})
	stdlog.SetFlags(0)
	stdlog.SetPrefix("")
	return func() {
		stdlog.SetOutput(w)
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
	}
}

// stdlogWriter turns each line the standard logger writes into a warning.
type stdlogWriter struct{ log *slog.Logger }

func (w stdlogWriter) Write(p []byte) (int, error) {
	w.log.Warn("library", "err", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// logErrors logs each error of a joined or config.Errors error on its own line.
func logErrors(log *slog.Logger, msg string, err error) {
	var ce config.Errors
	if errors.As(err, &ce) {
		for _, e := range ce {
			log.Error(msg, "err", e.Error())
		}
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			logErrors(log, msg, e)
		}
		return
	}
	log.Error(msg, "err", fmt.Sprint(err))
}
