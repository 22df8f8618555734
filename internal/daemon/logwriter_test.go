package daemon

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowBuffer is an output that is slow enough for lines to pile up.
type slowBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *slowBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

// Every line arrives whole and none is lost, from many goroutines, and
// Close flushes.
func TestLineWriterKeepsEveryLine(t *testing.T) {
	out := &slowBuffer{}
	w := newLineWriter(out)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				fmt.Fprintf(w, "goroutine=%d line=%d %s\n", g, i, strings.Repeat("x", 100))
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.b.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("got %d lines, want %d", len(lines), 8*500)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if !strings.HasSuffix(l, strings.Repeat("x", 100)) {
			t.Fatalf("torn line %q", l)
		}
		seen[l] = true
	}
	if len(seen) != 8*500 {
		t.Fatalf("duplicated lines: %d distinct", len(seen))
	}
	// After Close, writes go straight through.
	fmt.Fprintln(w, "after close")
	if !strings.HasSuffix(out.b.String(), "after close\n") {
		t.Error("write after Close lost")
	}
}

// Lines written close together share a write(2): that is what the writer is
// for. The goroutines pause between lines as request handlers do (which is
// when a writer that wrote at once would write line by line). Counted, not
// timed: 4,000 lines take far fewer writes than lines.
func TestLineWriterBatches(t *testing.T) {
	out := &slowBuffer{}
	w := newLineWriter(out)
	var wg sync.WaitGroup
	const goroutines, perG = 8, 500
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				fmt.Fprintf(w, "goroutine=%d line=%d\n", g, i)
				time.Sleep(20 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	w.Close()
	out.mu.Lock()
	defer out.mu.Unlock()
	if n := strings.Count(out.b.String(), "\n"); n != goroutines*perG {
		t.Fatalf("got %d lines, want %d", n, goroutines*perG)
	}
	if out.writes > goroutines*perG/10 {
		t.Errorf("%d lines took %d writes: not batched", goroutines*perG, out.writes)
	}
}

// A line written to an idle writer reaches the output without a Close.
func TestLineWriterIdleLineAppears(t *testing.T) {
	out := &slowBuffer{}
	w := newLineWriter(out)
	defer w.Close()
	fmt.Fprintln(w, "lonely line")
	for range 1000 { // 1000 x 10 ms: only a hang fails this
		out.mu.Lock()
		got := out.b.String()
		out.mu.Unlock()
		if got == "lonely line\n" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("an idle line never reached the output")
}
