package greylist

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
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
func TestBoltStoreContract(t *testing.T) {
	testStoreContract(t, func(t *testing.T) Store { return openTestBolt(t, "") }, scanChunk)
}

// Concurrent updates share commits (group commit), and none is lost.
func TestBoltGroupCommit(t *testing.T) {
	s := openTestBolt(t, "")
	const workers, each = 16, 50
	// bbolt never gives up on a conflict: every update applies.
	if got, applied := incrementConcurrently(t, s, []byte("counter"), workers, each); got != workers*each || applied != workers*each {
		t.Errorf("counter = %d after %d successful updates, want %d", got, applied, workers*each)
	}
	commits, ops := s.CommitStats()
	if ops < workers*each || commits > ops {
		t.Errorf("commit stats: %d commits for %d operations", commits, ops)
	}
	t.Logf("%d operations in %d commits", ops, commits)
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
