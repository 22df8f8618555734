package resolver

import (
	"context"
	"testing"

	"postgate/internal/dnstest"
)

// BenchmarkLookupTXTCacheHit measures the path every repeated SPF, DKIM and
// DNSBL lookup takes: a cache hit.
func BenchmarkLookupTXTCacheHit(b *testing.B) {
	srv := dnstest.NewServer(b, zone)
	r := newResolver(b, Options{}, srv)
	ctx := context.Background()
	if _, err := r.LookupTXT(ctx, "example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupTXT(ctx, "example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupACacheHitParallel is the hit path under contention on the
// cache lock.
func BenchmarkLookupACacheHitParallel(b *testing.B) {
	srv := dnstest.NewServer(b, zone)
	r := newResolver(b, Options{}, srv)
	ctx := context.Background()
	if _, err := r.LookupA(ctx, "mail.example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.LookupA(ctx, "mail.example.com"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLookupTXTMiss measures a full upstream round trip over UDP to
// the in-process server on loopback (the record has TTL 0: never cached).
func BenchmarkLookupTXTMiss(b *testing.B) {
	srv := dnstest.NewServer(b, zone)
	r := newResolver(b, Options{}, srv)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupTXT(ctx, "zero.example.com"); err != nil {
			b.Fatal(err)
		}
	}
}
