package milter

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// message2K is a 2 KB message from one of our users.
var message2K = goldenOutbound + strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.\n", 28)

func benchRoundTrip(b *testing.B, c client, msg string, macros ...string) {
	e := newEnv(b, nil)
	s := e.session()
	connect(b, s, c)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for b.Loop() {
		mods, act := transaction(b, s, msg, gomilter.MaxBodyChunk, macros...)
		if act.Code != gomilter.ActAccept || len(mods) == 0 {
			b.Fatalf("action %q, %d modifications", act.Code, len(mods))
		}
	}
}

// BenchmarkSignRoundTrip: one RSA-2048 + Ed25519 dual-signed 2 KB message
// per iteration over loopback TCP, go-milter's client (a reply per event).
func BenchmarkSignRoundTrip(b *testing.B) {
	benchRoundTrip(b, submission, message2K, "i", "4ABC123", "{auth_authen}", "alice")
}

// BenchmarkVerifyRoundTrip: a 2 KB message with an RSA-2048 signature,
// key from the test DNS server (no cache in the resolver).
func BenchmarkVerifyRoundTrip(b *testing.B) {
	e := newEnv(b, nil)
	other := e.rsa
	msg := signMessage(b, message2K, nil, other)
	benchRoundTrip(b, external, msg, "i", "4ABC123")
}

// BenchmarkSign10MB streams a 10 MB message through the signer and reports
// the live heap sampled while it streams (heap-peak-MB) next to the heap
// before it (heap-base-MB): the difference is what one message costs.
func BenchmarkSign10MB(b *testing.B) {
	// The client streams the body from one reusable 64 KB chunk, so the
	// heap growth is the milter's.
	chunk := []byte(strings.Repeat(strings.Repeat("x", 78)+"\r\n", gomilter.MaxBodyChunk/80))
	const chunks = 10 << 20 / (gomilter.MaxBodyChunk / 80 * 80)
	fields, _ := splitMessage(b, goldenOutbound)
	e := newEnv(b, nil)
	s := e.session()
	connect(b, s, submission)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.GC()
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	b.SetBytes(int64(chunks * len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Mail("alice@example.com", nil); err != nil {
			b.Fatal(err)
		}
		for _, f := range fields {
			if _, err := s.HeaderField(f.name, strings.TrimPrefix(f.value, " ")); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.HeaderEnd(); err != nil {
			b.Fatal(err)
		}
		for range chunks {
			if _, err := s.BodyChunk(chunk); err != nil {
				b.Fatal(err)
			}
		}
		mods, act, err := s.End()
		if err != nil || act.Code != gomilter.ActAccept || len(inserted(mods, "DKIM-Signature")) != 2 {
			b.Fatalf("End: %v %v %+v", err, act, mods)
		}
		s.Abort()
	}
	b.StopTimer()
	close(stop)
	<-done
	b.ReportMetric(float64(base.HeapAlloc)/(1<<20), "heap-base-MB")
	b.ReportMetric(float64(peak.Load())/(1<<20), "heap-peak-MB")
}
