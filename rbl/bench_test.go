package rbl

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"postgate/internal/dnstest"
	"postgate/internal/resolver"
)

var benchZone = dnstest.Zone{
	"$TTL 300",
	"*.a.test. A 127.0.0.2",
	"*.b.test. A 127.0.0.3",
	"*.c.test. A 127.0.0.4",
	"*.d.test. A 127.0.15.1",
	`*.a.test. TXT "listed"`,
}

var benchLists = []string{"a.test*3", "b.test=127.0.0.[2..11]*2", "c.test", "d.test=127.0.[0..255].[1..3]*-5"}

func benchChecker(b *testing.B, srv *dnstest.Server, cacheSize int) (*Checker, *resolver.DNS) {
	b.Helper()
	res, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	lists, err := ParseLists(benchLists)
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(Options{Lists: lists, Resolver: res, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return c, res
}

// BenchmarkScoreWarmCache: one client scored again and again; every answer
// comes from the resolver's cache, so the DNS server sees no query.
func BenchmarkScoreWarmCache(b *testing.B) {
	srv := dnstest.NewServer(b, benchZone)
	c, _ := benchChecker(b, srv, 0)
	q := Query{ClientIP: netip.MustParseAddr("192.0.2.1")}
	ctx := context.Background()
	if r := c.Score(ctx, q); r.Score != 3+2+1-5 {
		b.Fatalf("warm-up score %d: %+v", r.Score, r.Results)
	}
	srv.ResetLog()
	b.ReportAllocs()
	for b.Loop() {
		if r := c.Score(ctx, q); r.Score != 1 {
			b.Fatalf("score %d", r.Score)
		}
	}
	if n := srv.Queries(dnstest.AllNames, 0); n != 0 {
		b.Fatalf("%d DNS queries with a warm cache", n)
	}
	b.ReportMetric(0, "dns-queries/op")
}

// BenchmarkScore4Lists50ms: four lists, every answer delayed 50 ms, no
// cache. Parallel lookups make one Score take about one round trip (~50
// ms); the sequential baseline asks the same four names one after another.
func BenchmarkScore4Lists50ms(b *testing.B) {
	srv := dnstest.NewServer(b, benchZone)
	srv.Delay(dnstest.AllNames, 50*time.Millisecond)
	c, res := benchChecker(b, srv, -1)
	ctx := context.Background()

	b.Run("parallel", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			q := Query{ClientIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}
			if r := c.Score(ctx, q); r.Score != 1 {
				b.Fatalf("score %d: %+v", r.Score, r.Results)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/score")
	})
	b.Run("sequential-baseline", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			for _, z := range []string{"a", "b", "c", "d"} {
				if _, err := res.LookupA(ctx, fmt.Sprintf("%d.2.0.192.%s.test", i, z)); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/score")
	})
}
