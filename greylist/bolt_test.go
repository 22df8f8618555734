package greylist

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestBoltRestartKeepsState(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "greylist.db")
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 1

	s, err := OpenBolt(path, BoltOptions{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	g := New(s, cfg, nil, clock.Now)
	passTriplet(t, g, clock, "192.0.2.10", 1)
	pending := Input{ClientIP: netip.MustParseAddr("198.51.100.1"), Sender: "p@x.example", Recipient: "r@y.example"}
	if v, _ := g.Check(ctx, pending); v.Reason != ReasonNew {
		t.Fatalf("got %+v", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, Triplets, []byte("k"), func([]byte) ([]byte, bool) { return []byte("v"), true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v", err)
	}
	if err := s.View(ctx, Triplets, []byte("k"), func([]byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("View after Close: %v", err)
	}

	s2, err := OpenBolt(path, BoltOptions{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	g2 := New(s2, cfg, nil, clock.Now)
	clock.Advance(time.Minute)
	if v, _ := g2.Check(ctx, pending); v.Reason != ReasonEarlyRetry || v.Wait != 4*time.Minute {
		t.Errorf("pending triplet after reopen: %+v", v)
	}
	if v, _ := g2.Check(ctx, Input{ClientIP: netip.MustParseAddr("192.0.2.10"), Sender: "z@x.example", Recipient: "r@y.example"}); v.Reason != ReasonAWL {
		t.Errorf("AWL client after reopen: %+v", v)
	}
	st, err := g2.Stats(ctx)
	if err != nil || st.Triplets != 2 || st.Passed != 1 || st.Pending != 1 || st.AWLClients != 1 {
		t.Errorf("stats after reopen: %+v, %v", st, err)
	}
	if err := s2.CheckConsistency(); err != nil {
		t.Error(err)
	}
}

func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "greylist.db")
	s := openTestBolt(t, path)
	_ = s
	_, err := OpenBolt(path, BoltOptions{Timeout: 100 * time.Millisecond, Logger: quietLogger})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

// TestBoltNoLostUpdates increments one counter from many goroutines: group commit must
// apply every read-modify-write on the result of the previous one.
func TestBoltNoLostUpdates(t *testing.T) {
	ctx := context.Background()
	s := openTestBolt(t, "")
	key := []byte("counter")
	const workers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				errs <- s.Update(ctx, Clients, key, func(cur []byte) ([]byte, bool) {
					var n uint64
					if len(cur) == 8 {
						n = binary.BigEndian.Uint64(cur)
					}
					return binary.BigEndian.AppendUint64(nil, n+1), true
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var got uint64
	s.View(ctx, Clients, key, func(v []byte) error { got = binary.BigEndian.Uint64(v); return nil })
	if got != workers*each {
		t.Errorf("counter = %d, want %d", got, workers*each)
	}
	commits, ops := s.CommitStats()
	if ops < workers*each || commits > ops {
		t.Errorf("commit stats: %d commits for %d operations", commits, ops)
	}
	t.Logf("%d operations in %d commits", ops, commits)
}

func TestBoltUpdateSemantics(t *testing.T) {
	ctx := context.Background()
	s := openTestBolt(t, "")
	get := func(k string) []byte {
		var out []byte
		if err := s.View(ctx, Triplets, []byte(k), func(v []byte) error { out = append([]byte(nil), v...); return nil }); err != nil {
			t.Fatal(err)
		}
		if out == nil {
			return nil
		}
		return out
	}
	put := func(k, v string) {
		if err := s.Update(ctx, Triplets, []byte(k), func([]byte) ([]byte, bool) { return []byte(v), true }); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1")
	var seen []byte
	s.Update(ctx, Triplets, []byte("a"), func(cur []byte) ([]byte, bool) { seen = append([]byte(nil), cur...); return nil, false })
	if string(seen) != "1" || string(get("a")) != "1" {
		t.Errorf("write=false: saw %q, value %q", seen, get("a"))
	}
	s.Update(ctx, Triplets, []byte("a"), func(cur []byte) ([]byte, bool) { return nil, true })
	if get("a") != nil {
		t.Errorf("write=true, nil: value %q still there", get("a"))
	}
	// A panicking UpdateFunc fails its own update only.
	err := s.Update(ctx, Triplets, []byte("p"), func([]byte) ([]byte, bool) { panic("boom") })
	if err == nil {
		t.Error("panic in UpdateFunc: no error")
	}
	put("b", "2")
	if string(get("b")) != "2" {
		t.Error("store unusable after a panicking UpdateFunc")
	}
	if err := s.Update(ctx, Triplets, nil, func([]byte) ([]byte, bool) { return nil, false }); err == nil {
		t.Error("empty key accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Update(cctx, Triplets, []byte("c"), func([]byte) ([]byte, bool) { return []byte("3"), true }); !errors.Is(err, context.Canceled) {
		// The op may have been queued before the cancellation was seen; both are valid,
		// but an immediate cancellation on an idle store must not hang.
		t.Logf("cancelled Update returned %v", err)
	}
}

func TestBoltScanAndSweepInChunks(t *testing.T) {
	ctx := context.Background()
	s := openTestBolt(t, "")
	const n = 2*scanChunk + 345
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				k := fmt.Appendf(nil, "k%05d", i)
				if err := s.Update(ctx, Triplets, k, func([]byte) ([]byte, bool) { return []byte{byte(i % 3)}, true }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	count, last := 0, ""
	err := s.Scan(ctx, Triplets, []byte("k"), func(k, v []byte) bool {
		if string(k) <= last {
			t.Fatalf("scan order: %q after %q", k, last)
		}
		last = string(k)
		count++
		return true
	})
	if err != nil || count != n {
		t.Fatalf("scanned %d of %d keys, %v", count, n, err)
	}
	count = 0
	s.Scan(ctx, Triplets, []byte("k010"), func(k, v []byte) bool { count++; return true })
	if count != 100 {
		t.Errorf("prefix scan: %d keys, want 100", count)
	}
	count = 0
	s.Scan(ctx, Triplets, nil, func(k, v []byte) bool { count++; return count < 1500 })
	if count != 1500 {
		t.Errorf("scan stopped after %d, want 1500", count)
	}
	deleted, err := s.Sweep(ctx, Triplets, func(k, v []byte) bool { return v[0] == 0 })
	want := (n + 2) / 3
	if err != nil || deleted != want {
		t.Fatalf("sweep deleted %d, want %d: %v", deleted, want, err)
	}
	count = 0
	s.Scan(ctx, Triplets, nil, func(k, v []byte) bool {
		if v[0] == 0 {
			t.Errorf("%s not swept", k)
		}
		count++
		return true
	})
	if count != n-want {
		t.Errorf("%d keys left, want %d", count, n-want)
	}
}

func TestCorruptRecords(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 2
	s := openTestBolt(t, "")
	g := New(s, cfg, nil, clock.Now)
	put := func(b Bucket, k string, v []byte) {
		if err := s.Update(ctx, b, []byte(k), func([]byte) ([]byte, bool) { return v, true }); err != nil {
			t.Fatal(err)
		}
	}
	put(Triplets, "192.0.2.0/alice@sender.example/bob@rcpt.example", []byte("1700000000,1700000300")) // postgrey's format
	put(Clients, "192.0.2.10", []byte{0xff})
	if v, err := g.Check(ctx, mail); err != nil || v.Reason != ReasonNew {
		t.Errorf("corrupt triplet record: %+v, %v; want new", v, err)
	}
	st, _ := g.Stats(ctx)
	if st.Corrupt != 1 || st.Triplets != 1 {
		t.Errorf("stats %+v: want the triplet rewritten and one corrupt client record", st)
	}
	res, err := g.Sweep(ctx)
	if err != nil || res.Clients != 1 || res.Triplets != 0 {
		t.Errorf("sweep of corrupt records: %+v, %v", res, err)
	}
}
