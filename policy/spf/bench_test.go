package spf

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"postgate/internal/dnstest"
)

// BenchmarkDecisionWarmCache measures a whole decision (HELO and MAIL FROM
// checks, then Decide) when every answer is cached: no DNS traffic at all
// (TestWarmCacheNoQueries asserts that).
func BenchmarkDecisionWarmCache(b *testing.B) {
	srv := dnstest.NewServer(b, cachedZone)
	c := newChecker(b, srv, 0, 0)
	p := DefaultPolicy()
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.10")
	decide := func() Outcome {
		return p.Decide(c.CheckHelo(ctx, ip, "other.example"),
			c.CheckMailFrom(ctx, ip, "other.example", "someone@example.com"))
	}
	if o := decide(); o.Action != Accept {
		b.Fatalf("warm-up: %+v", o)
	}
	srv.ResetLog()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			decide()
		}
	})
	b.StopTimer()
	if n := srv.Queries(dnstest.AllNames, 0); n != 0 {
		b.Fatalf("%d DNS queries with a warm cache", n)
	}
}

// BenchmarkMailFromSlowDNS has the DNS server delay every answer by 50ms
// and no cache; every check is for a different domain (so nothing is
// coalesced) and takes two round trips (TXT, then A and AAAA in parallel),
// so one check lasts ~100ms. Throughput must grow with the number of
// checks in flight: decisions/s is the number to read.
func BenchmarkMailFromSlowDNS(b *testing.B) {
	srv := dnstest.NewServer(b, dnstest.Zone{
		`*.bench.example. TXT "v=spf1 a -all"`,
		"*.bench.example. A 192.0.2.10",
	})
	srv.Delay(dnstest.AllNames, 50*time.Millisecond)
	c := newChecker(b, srv, -1, 0)
	ip := netip.MustParseAddr("198.51.100.1")
	var seq atomic.Int64
	for _, conc := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						d := fmt.Sprintf("s@d%d.bench.example", seq.Add(1))
						if r := c.CheckMailFrom(context.Background(), ip, "h.example", d); r.Result != Fail {
							b.Errorf("%s: %+v", d, r)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
		})
	}
}
