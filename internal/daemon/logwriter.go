package daemon

import (
	"io"
	"sync"
)

// lineWriter hands log lines to the real output from one goroutine, so that
// lines written while a write(2) is in progress share the next one. Under
// load this turns thousands of decision lines per second into a few hundred
// writes; when idle every line is written at once (no timer, no delay).
// Memory is bounded: past maxBuffered bytes, writers wait for the output.
type lineWriter struct {
	out io.Writer

	mu      sync.Mutex
	cond    *sync.Cond // signalled when buf is drained or the writer closes
	buf     []byte
	kick    chan struct{}
	closed  bool
	drained chan struct{}
}

const maxBuffered = 1 << 20

func newLineWriter(out io.Writer) *lineWriter {
	w := &lineWriter{out: out, kick: make(chan struct{}, 1), drained: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write queues p (one log record) for the output.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.buf) >= maxBuffered && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		return w.out.Write(p)
	}
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *lineWriter) run() {
	defer close(w.drained)
	var spare []byte
	for range w.kick {
		for {
			w.mu.Lock()
			if len(w.buf) == 0 {
				w.cond.Broadcast()
				w.mu.Unlock()
				break
			}
			out := w.buf
			w.buf = spare[:0]
			w.cond.Broadcast()
			w.mu.Unlock()
			// A failing output (stderr closed) cannot be reported anywhere
			// better than where the logs were going; the lines are dropped.
			w.out.Write(out)
			spare = out
		}
	}
}

// Close writes what is queued and makes later writes synchronous.
func (w *lineWriter) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	close(w.kick)
	<-w.drained
}
