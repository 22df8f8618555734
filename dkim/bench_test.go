package dkim

import (
	"context"
	"crypto"
	"runtime"
	"strings"
	"testing"
	"time"

	"postgate/internal/resolver"
)

// message2K is a typical 2 KB message.
var message2K = crlf("Received: from client.example (client.example [192.0.2.1])\n\tby mx.example.com with ESMTPSA; Sat, 21 Nov 2026 06:00:00 +0000\n" +
	"From: Joe <joe@example.com>\nTo: Suzie <suzie@example.net>\nSubject: Benchmark message\nDate: Sat, 21 Nov 2026 06:00:00 +0000\n" +
	"Message-ID: <bench@example.com>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" +
	strings.Repeat("The quick brown fox jumps over the lazy dog, again and again.  \n", 28))

func benchSign(b *testing.B, k *Key) {
	fields, body := parseMessage(b, message2K)
	b.SetBytes(int64(len(message2K)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, err := NewSigner([]*Key{k}, fields, nil)
			if err != nil {
				b.Fatal(err)
			}
			s.Write([]byte(body))
			if _, err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkSignRSA2048(b *testing.B) {
	rk, _ := testKeys(b)
	benchSign(b, rk)
}

func BenchmarkSignEd25519(b *testing.B) {
	_, ek := testKeys(b)
	benchSign(b, ek)
}

// benchResolver is the daemon's caching resolver on a loopback server with
// a TTL, so verification, not DNS, is measured.
func benchResolver(b *testing.B, keys ...*Key) resolver.Resolver {
	var zone []string
	for _, k := range keys {
		zone = append(zone, strings.Replace(keyRecord(b, k), ". 0 IN TXT", ". 3600 IN TXT", 1))
	}
	srv, _ := newDNS(b, zone...)
	res, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return res
}

func benchVerify(b *testing.B, k *Key) {
	res := benchResolver(b, k)
	signed := prepend(signString(b, []*Key{k}, message2K, nil, 1<<20), message2K)
	fields, body := parseMessage(b, signed)
	b.SetBytes(int64(len(signed)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v, err := NewVerifier(context.Background(), fields, &VerifyOptions{Resolver: res})
			if err != nil {
				b.Fatal(err)
			}
			v.Write([]byte(body))
			r, err := v.Close()
			if err != nil || len(r) != 1 || r[0].Status != StatusPass {
				b.Fatalf("%+v %v", r, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkVerifyRSA2048(b *testing.B) {
	rk, _ := testKeys(b)
	benchVerify(b, rk)
}

func BenchmarkVerifyEd25519(b *testing.B) {
	_, ek := testKeys(b)
	benchVerify(b, ek)
}

// tenMB is a 10 MB body of 78-byte lines.
var tenMB = strings.Repeat(strings.Repeat("x", 76)+"\r\n", 10<<20/78)

// BenchmarkSign10MB streams a 10 MB body in 64 KB chunks (what Postfix sends
// a milter): B/op is garbage per message, not resident memory.
func BenchmarkSign10MB(b *testing.B) {
	rk, ek := testKeys(b)
	fields, _ := parseMessage(b, message2K)
	chunk := []byte(tenMB[:64<<10])
	b.SetBytes(int64(len(tenMB)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := NewSigner([]*Key{rk, ek}, fields, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range len(tenMB) / len(chunk) {
			s.Write(chunk)
		}
		if _, err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify10MB(b *testing.B) {
	rk, _ := testKeys(b)
	res := benchResolver(b, rk)
	fields, _ := parseMessage(b, prepend(signString(b, []*Key{rk}, message2K, nil, 1<<20), message2K))
	chunk := []byte(tenMB[:64<<10])
	b.SetBytes(int64(len(tenMB)))
	b.ReportAllocs()
	for b.Loop() {
		v, err := NewVerifier(context.Background(), fields, &VerifyOptions{Resolver: res})
		if err != nil {
			b.Fatal(err)
		}
		for range len(tenMB) / len(chunk) {
			v.Write(chunk)
		}
		if _, err := v.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStreamingMemoryBounded streams 10 MB through a dual signer and a
// verifier and checks that the live heap never grows by more than 2 MB.
func TestStreamingMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("10 MB streaming")
	}
	rk, ek := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk))
	fields, _ := parseMessage(t, message2K)
	vfields, _ := parseMessage(t, prepend(signString(t, []*Key{rk}, message2K, nil, 1<<20), message2K))
	chunk := []byte(tenMB[:64<<10])
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var peak uint64
	s, err := NewSigner([]*Key{rk, ek}, fields, &SignOptions{Canonicalization: "simple/simple"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(context.Background(), vfields, &VerifyOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	n := len(tenMB) / len(chunk)
	for i := range n {
		s.Write(chunk)
		v.Write(chunk)
		if i%16 == 0 {
			peak = max(peak, heap())
		}
	}
	sigs, err := s.Close()
	if err != nil || len(sigs) != 2 {
		t.Fatal(err)
	}
	if r, err := v.Close(); err != nil || len(r) != 1 || r[0].Status != StatusFail {
		t.Fatalf("verifier on another body: %+v %v", r, err) // body differs from the signed one
	}
	if peak > base && peak-base > 2<<20 {
		t.Errorf("live heap grew by %d bytes while streaming %d bytes", peak-base, n*len(chunk))
	}
	t.Logf("streamed %.1f MB; live heap grew by at most %d KB", float64(n*len(chunk))/(1<<20), int64(peak-base)/1024)
}

// BenchmarkRawRSA2048 is the floor for BenchmarkSignRSA2048: one PKCS#1 v1.5
// signature of a SHA-256 digest, no DKIM around it.
func BenchmarkRawRSA2048(b *testing.B) {
	rk := testRSA(b)
	digest := make([]byte, 32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rk.Sign(nil, digest, crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
}
