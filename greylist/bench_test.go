package greylist

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFsync measures the disk's cost of one durable small write, the floor under
// every commit (bbolt does two such syncs per commit).
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	for i := 0; b.Loop(); i++ {
		if _, err := f.WriteAt(page, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// latencies collects per-operation latencies from parallel benchmark goroutines.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	pct := func(p float64) float64 {
		return float64(l.all[int(float64(len(l.all)-1)*p)].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func benchGreylister(b *testing.B, opts BoltOptions) (*Greylister, *BoltStore) {
	opts.Logger = quietLogger
	s, err := OpenBolt(filepath.Join(b.TempDir(), "greylist.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	cfg := DefaultConfig()
	cfg.Logger = quietLogger
	return New(s, cfg, nil, nil), s
}

func benchInput(i uint64) Input {
	return Input{
		ClientIP:   netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		ClientName: "unknown",
		Sender:     fmt.Sprintf("sender%d@example.com", i),
		Recipient:  "user@example.org",
	}
}

// runChecks runs Check from 16 goroutines per CPU (the daemon's connections) and
// reports latency percentiles and the average group-commit batch.
func runChecks(b *testing.B, g *Greylister, s *BoltStore, input func(i uint64) Input, want string) {
	runChecksP(b, 16, g, s, input, want)
}

func runChecksP(b *testing.B, parallelism int, g *Greylister, s *BoltStore, input func(i uint64) Input, want string) {
	c0, o0 := s.CommitStats()
	runStoreChecks(b, parallelism, g, input, want)
	if c1, o1 := s.CommitStats(); c1 > c0 {
		b.ReportMetric(float64(o1-o0)/float64(c1-c0), "ops/commit")
	}
}

// runStoreChecks runs Check from parallelism goroutines per CPU on any store and
// reports latency percentiles.
func runStoreChecks(b *testing.B, parallelism int, g *Greylister, input func(i uint64) Input, want string) {
	var lat latencies
	var next atomic.Uint64
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var local []time.Duration
		for pb.Next() {
			in := input(next.Add(1))
			start := time.Now()
			v, err := g.Check(ctx, in)
			local = append(local, time.Since(start))
			if err != nil || v.Reason != want {
				b.Errorf("got %+v, %v; want %s", v, err, want)
				return
			}
		}
		lat.add(local)
	})
	b.StopTimer()
	lat.report(b)
}

// BenchmarkCheckNewTriplets: every request is a new triplet, so every request is a
// durable write (group-committed).
func BenchmarkCheckNewTriplets(b *testing.B) {
	g, s := benchGreylister(b, BoltOptions{})
	runChecks(b, g, s, benchInput, ReasonNew)
}

// BenchmarkCheckNewTriplets128 is the same with 64 goroutines per CPU: batches grow
// with concurrency, so throughput does too.
func BenchmarkCheckNewTriplets128(b *testing.B) {
	g, s := benchGreylister(b, BoltOptions{})
	runChecksP(b, 64, g, s, benchInput, ReasonNew)
}

// BenchmarkCheckNewTripletsNoSync is the same without fsync: the difference is the
// cost of durability.
func BenchmarkCheckNewTripletsNoSync(b *testing.B) {
	g, s := benchGreylister(b, BoltOptions{NoSync: true})
	runChecks(b, g, s, benchInput, ReasonNew)
}

// storePassedTriplets stores the triplets of benchInput(0..n-1) as passed
// half an hour ago, from 64 goroutines.
func storePassedTriplets(b *testing.B, g *Greylister, s Store, n uint64) {
	b.Helper()
	ctx := context.Background()
	then := time.Now().Add(-time.Hour / 2)
	rec := encodeTriplet(tripletRecord{First: then.Add(-10 * time.Minute), Last: then, Passed: true})
	var wg sync.WaitGroup
	for w := range uint64(64) {
		wg.Go(func() {
			for i := w; i < n; i += 64 {
				key := g.tripletKey(benchInput(i))
				if err := s.Update(ctx, Triplets, key, func([]byte) ([]byte, bool) { return rec, true }); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkCheckKnownTriplets: requests for 100,000 triplets that passed greylisting
// (read-only path, no write).
func BenchmarkCheckKnownTriplets(b *testing.B) {
	g, s := benchGreylister(b, BoltOptions{})
	const n = 100000
	storePassedTriplets(b, g, s, n)
	runChecks(b, g, s, func(i uint64) Input { return benchInput(i % n) }, ReasonKnown)
}
