package greylist

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// testStoreContract checks what every Store promises (see the Store
// interface), on stores made by open. chunk is the store's own batch size
// for Scan and Sweep: the data spans more than two of them.
func testStoreContract(t *testing.T, open func(t *testing.T) Store, chunk int) {
	t.Run("UpdateSemantics", func(t *testing.T) { testStoreUpdateSemantics(t, open(t)) })
	t.Run("NoLostUpdates", func(t *testing.T) {
		s := open(t)
		const workers, each = 16, 50
		got, applied := incrementConcurrently(t, s, []byte("counter"), workers, each)
		if got != applied || applied == 0 {
			t.Errorf("counter = %d after %d of %d updates returned success", got, applied, workers*each)
		}
	})
	t.Run("ScanAndSweep", func(t *testing.T) { testStoreScanAndSweep(t, open(t), 2*chunk+345) })
}

func testStoreUpdateSemantics(t *testing.T, s Store) {
	ctx := context.Background()
	if v := storeGet(t, s, Triplets, "a"); v != nil {
		t.Fatalf("absent key: %q", v)
	}
	storePut(t, s, Triplets, "a", "1")
	var seen []byte
	err := s.Update(ctx, Triplets, []byte("a"), func(cur []byte) ([]byte, bool) { seen = bytes.Clone(cur); return nil, false })
	if err != nil || string(seen) != "1" || string(storeGet(t, s, Triplets, "a")) != "1" {
		t.Errorf("write=false: %v, saw %q, value %q", err, seen, storeGet(t, s, Triplets, "a"))
	}
	storePut(t, s, Triplets, "a", "2")
	if v := storeGet(t, s, Triplets, "a"); string(v) != "2" {
		t.Errorf("overwrite: %q", v)
	}
	if v := storeGet(t, s, Clients, "a"); v != nil {
		t.Errorf("buckets are not separate: %q in clients", v)
	}
	for range 2 { // deleting an absent key is fine too
		if err := s.Update(ctx, Triplets, []byte("a"), func([]byte) ([]byte, bool) { return nil, true }); err != nil {
			t.Fatal(err)
		}
		if v := storeGet(t, s, Triplets, "a"); v != nil {
			t.Errorf("write=true, nil: value %q still there", v)
		}
	}
	// A panicking UpdateFunc fails its own update only.
	if err := s.Update(ctx, Triplets, []byte("p"), func([]byte) ([]byte, bool) { panic("boom") }); err == nil {
		t.Error("panic in UpdateFunc: no error")
	}
	storePut(t, s, Triplets, "b", "3")
	if string(storeGet(t, s, Triplets, "b")) != "3" {
		t.Error("store unusable after a panicking UpdateFunc")
	}
	if err := s.Update(ctx, Triplets, nil, func([]byte) ([]byte, bool) { return nil, false }); err == nil {
		t.Error("empty key accepted")
	}
	if err := s.Update(ctx, Bucket(7), []byte("x"), func([]byte) ([]byte, bool) { return nil, false }); err == nil {
		t.Error("unknown bucket accepted")
	}
	wantErr := errors.New("from fn")
	if err := s.View(ctx, Triplets, []byte("b"), func([]byte) error { return wantErr }); err != wantErr {
		t.Errorf("View returned %v, want the error of fn", err)
	}
	// A cancelled context returns (the update may or may not be applied).
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = s.Update(cctx, Triplets, []byte("c"), func([]byte) ([]byte, bool) { return []byte("4"), true })
	t.Logf("Update with a cancelled context: %v", err)

	// Binary keys (privacy mode), with bytes special to Redis globs.
	bin := string([]byte{'*', 0, 0xff, '[', '\\', '?', ']'})
	storePut(t, s, Clients, bin, "bin")
	if v := storeGet(t, s, Clients, bin); string(v) != "bin" {
		t.Errorf("binary key: %q", v)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Update(ctx, Triplets, []byte("k"), func([]byte) ([]byte, bool) { return []byte("v"), true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v", err)
	}
	if err := s.View(ctx, Triplets, []byte("k"), func([]byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("View after Close: %v", err)
	}
	if err := s.Scan(ctx, Triplets, nil, func(k, v []byte) bool { return true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Scan after Close: %v", err)
	}
}

// incrementConcurrently adds 1 to the counter at key workers*each times from
// workers goroutines and returns the counter and how many updates returned
// success: every one of those must apply exactly once. A store may give up
// on an update other writers keep racing (ErrUpdateConflict, which a loaded
// machine can cause); that update must not apply. Any other error fails.
func incrementConcurrently(t *testing.T, s Store, key []byte, workers, each int) (counter, applied uint64) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				errs <- s.Update(ctx, Clients, key, increment)
			}
		})
	}
	wg.Wait()
	close(errs)
	gaveUp := 0
	for err := range errs {
		switch {
		case err == nil:
			applied++
		case errors.Is(err, ErrUpdateConflict):
			gaveUp++
		default:
			t.Fatal(err)
		}
	}
	if gaveUp > 0 {
		t.Logf("%d updates gave up on conflicts", gaveUp)
	}
	v := storeGet(t, s, Clients, string(key))
	if len(v) != 8 {
		t.Fatalf("counter value %q", v)
	}
	return binary.BigEndian.Uint64(v), applied
}

// increment is an UpdateFunc adding 1 to a big-endian uint64 counter.
func increment(cur []byte) ([]byte, bool) {
	var n uint64
	if len(cur) == 8 {
		n = binary.BigEndian.Uint64(cur)
	}
	return binary.BigEndian.AppendUint64(nil, n+1), true
}

// testStoreScanAndSweep writes n keys k00000... (value i%3) from 8
// goroutines, plus keys outside the prefix and in the other bucket, then
// scans (order, values, prefix, early stop) and sweeps a third of them.
func testStoreScanAndSweep(t *testing.T, s Store, n int) {
	ctx := context.Background()
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
	storePut(t, s, Triplets, "j", "x")
	storePut(t, s, Clients, "k00000", "x")
	count, last := 0, ""
	err := s.Scan(ctx, Triplets, []byte("k"), func(k, v []byte) bool {
		if string(k) <= last {
			t.Fatalf("scan order: %q after %q", k, last)
		}
		if want := fmt.Sprintf("k%05d", count); string(k) != want || len(v) != 1 || v[0] != byte(count%3) {
			t.Fatalf("scan: %q=%v, want %s", k, v, want)
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

	deleted, err := s.Sweep(ctx, Triplets, func(k, v []byte) bool { return len(v) == 1 && v[0] == 0 })
	want := (n + 2) / 3
	if err != nil || deleted != want {
		t.Fatalf("sweep deleted %d, want %d: %v", deleted, want, err)
	}
	count = 0
	s.Scan(ctx, Triplets, []byte("k"), func(k, v []byte) bool {
		if v[0] == 0 {
			t.Errorf("%s not swept", k)
		}
		count++
		return true
	})
	if count != n-want {
		t.Errorf("%d keys left, want %d", count, n-want)
	}
	if v := storeGet(t, s, Clients, "k00000"); string(v) != "x" {
		t.Errorf("sweep of triplets touched clients: %q", v)
	}
}

func storeGet(t *testing.T, s Store, b Bucket, k string) []byte {
	t.Helper()
	var out []byte
	err := s.View(context.Background(), b, []byte(k), func(v []byte) error {
		if v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storePut(t *testing.T, s Store, b Bucket, k, v string) {
	t.Helper()
	err := s.Update(context.Background(), b, []byte(k), func([]byte) ([]byte, bool) { return []byte(v), true })
	if err != nil {
		t.Fatal(err)
	}
}
