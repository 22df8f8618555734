package greylist

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is the injected clock: tests never sleep for a greylisting delay.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 6, 2, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingStore counts the writes (UpdateFuncs that asked to write) reaching the store.
type countingStore struct {
	Store
	writes atomic.Int64
}

func (c *countingStore) Update(ctx context.Context, b Bucket, key []byte, fn UpdateFunc) error {
	return c.Store.Update(ctx, b, key, func(cur []byte) ([]byte, bool) {
		v, w := fn(cur)
		if w {
			c.writes.Add(1)
		}
		return v, w
	})
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func openTestBolt(t testing.TB, path string) *BoltStore {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "greylist.db")
	}
	s, err := OpenBolt(path, BoltOptions{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.AutoWhitelistAfter = 0
	cfg.Logger = quietLogger
	return cfg
}
