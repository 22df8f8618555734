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

// bigChunk is a 64 KB body chunk of 80-byte lines; bigChunks of them make a
// 10 MB body. The client streams the body from it, so what the heap does is
// the milter's.
var bigChunk = []byte(strings.Repeat(strings.Repeat("x", 78)+"\r\n", gomilter.MaxBodyChunk/80))

const bigChunks = 10 << 20 / (gomilter.MaxBodyChunk / 80 * 80)

// signBig sends one 10 MB message from an authenticated user on s and
// checks that it comes back with both signatures.
func signBig(tb testing.TB, s *gomilter.ClientSession, fields []field) {
	tb.Helper()
	if _, err := s.Mail("alice@example.com", nil); err != nil {
		tb.Fatal(err)
	}
	for _, f := range fields {
		if _, err := s.HeaderField(f.name, strings.TrimPrefix(f.value, " ")); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		tb.Fatal(err)
	}
	for range bigChunks {
		if _, err := s.BodyChunk(bigChunk); err != nil {
			tb.Fatal(err)
		}
	}
	mods, act, err := s.End()
	if err != nil || act.Code != gomilter.ActAccept || len(inserted(mods, "DKIM-Signature")) != 2 {
		tb.Fatalf("End: %v %v %+v", err, act, mods)
	}
	s.Abort()
}

// A 10 MB message costs the milter a small fraction of its size in
// allocations: its body chunks are read into one buffer per session and
// hashed without copies (the patched go-milter and go-msgauth,
// third_party/README.md). With the released libraries it was about 6 times
// the message size (two signatures, each copying the body twice, plus a new
// buffer per chunk), garbage that raised the resident set by 5 MB.
// Allocation is counted in bytes, not time: the number depends only on the
// code. It includes the go-milter client's (a 4 KB buffer per chunk sent).
func TestBigMessageAllocations(t *testing.T) {
	fields, _ := splitMessage(t, goldenOutbound)
	e := newEnv(t, nil)
	s := e.session()
	connect(t, s, submission)
	signBig(t, s, fields) // sessions and buffers set up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	signBig(t, s, fields)
	runtime.ReadMemStats(&after)
	size := bigChunks * len(bigChunk)
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > uint64(size)*4/10 {
		t.Errorf("a %d-byte message allocated %d bytes (%.0f%% of its size), want under 40%%", size, allocated, 100*float64(allocated)/float64(size))
	} else {
		t.Logf("a %d-byte message allocated %d bytes", size, allocated)
	}
}

// BenchmarkSign10MB streams a 10 MB message through the signer and reports
// the live heap sampled while it streams (heap-peak-MB) next to the heap
// before it (heap-base-MB): the difference is what one message costs.
func BenchmarkSign10MB(b *testing.B) {
	b.ReportAllocs()
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
	b.SetBytes(int64(bigChunks * len(bigChunk)))
	b.ResetTimer()
	for b.Loop() {
		signBig(b, s, fields)
	}
	b.StopTimer()
	close(stop)
	<-done
	b.ReportMetric(float64(base.HeapAlloc)/(1<<20), "heap-base-MB")
	b.ReportMetric(float64(peak.Load())/(1<<20), "heap-peak-MB")
}
