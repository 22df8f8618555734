// Command policyload drives a Postfix policy service (postgate, postgrey,
// policyd-spf...) with realistic RCPT requests over TCP or a unix socket
// and reports throughput, latency percentiles and the actions received.
//
//	policyload -addr inet:127.0.0.1:10040 -conns 32 -requests 100000 -duration 30s -workload mix
//
// It stops at whichever comes first: -requests sent, -duration elapsed, or
// SIGINT/SIGTERM; it always prints what it measured.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.addr, "addr", "inet:127.0.0.1:10040", "policy service: inet:host:port or unix:/path")
	flag.IntVar(&cfg.conns, "conns", 32, "concurrent connections")
	flag.Int64Var(&cfg.requests, "requests", 100000, "total requests to send (bound)")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "longest run (bound)")
	flag.StringVar(&cfg.workload, "workload", "mix", "new (every triplet new), repeat (a fixed set cycled), mix (50/50)")
	flag.IntVar(&cfg.triplets, "triplets", 1000, "size of the fixed triplet set of repeat/mix")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the generated addresses and names")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "time to wait for one reply")
	flag.Parse()
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "policyload:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st := run(ctx, cfg)
	st.print(os.Stdout, cfg)
	if st.ok.Load() == 0 {
		os.Exit(1)
	}
}

type config struct {
	addr              string
	network, address  string
	conns             int
	requests          int64
	duration, timeout time.Duration
	workload          string
	triplets          int
	seed              uint64
}

func (c *config) validate() error {
	var err error
	if c.network, c.address, err = parseAddr(c.addr); err != nil {
		return err
	}
	switch {
	case c.conns < 1 || c.conns > 10000:
		return fmt.Errorf("-conns %d: want 1..10000", c.conns)
	case c.requests < 1:
		return fmt.Errorf("-requests %d: want at least 1", c.requests)
	case c.duration <= 0 || c.timeout <= 0:
		return errors.New("-duration and -timeout must be positive")
	case c.triplets < 1:
		return fmt.Errorf("-triplets %d: want at least 1", c.triplets)
	}
	switch c.workload {
	case "new", "repeat", "mix":
	default:
		return fmt.Errorf("-workload %q: want new, repeat or mix", c.workload)
	}
	return nil
}

// parseAddr takes Postfix's notation (inet:host:port, unix:path) and plain
// host:port or /path.
func parseAddr(s string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(s, "inet:"):
		return "tcp", strings.TrimPrefix(s, "inet:"), nil
	case strings.HasPrefix(s, "unix:"):
		return "unix", strings.TrimPrefix(s, "unix:"), nil
	case strings.HasPrefix(s, "/"):
		return "unix", s, nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("-addr %q: want inet:host:port or unix:/path", s)
	}
	return "tcp", s, nil
}

// stats are shared by the workers; latencies go to per-worker histograms.
type stats struct {
	ok, connErrs, ioErrs, badReplies atomic.Int64
	mu                               sync.Mutex
	actions                          map[string]int64
	hist                             histogram
	elapsed                          time.Duration
	firstErr                         atomic.Value // string
}

func (s *stats) fail(counter *atomic.Int64, err error) {
	counter.Add(1)
	s.firstErr.CompareAndSwap(nil, err.Error())
}

func run(ctx context.Context, cfg config) *stats {
	st := &stats{actions: map[string]int64{}}
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var next atomic.Int64 // index of the next request to send
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := worker{cfg: cfg, st: st, actions: map[string]int64{}}
			w.loop(ctx, &next)
			st.mu.Lock()
			for a, n := range w.actions {
				st.actions[a] += n
			}
			st.hist.merge(&w.hist)
			st.mu.Unlock()
		}()
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	return st
}

type worker struct {
	cfg     config
	st      *stats
	mu      sync.Mutex // guards conn against the end-of-run interrupt
	conn    net.Conn
	r       *bufio.Reader
	buf     []byte
	hist    histogram
	actions map[string]int64
}

func (w *worker) loop(ctx context.Context, next *atomic.Int64) {
	defer w.setConn(nil)
	// An expired deadline unblocks a read when the run ends.
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		if w.conn != nil {
			w.conn.SetDeadline(time.Unix(1, 0))
		}
		w.mu.Unlock()
	})
	defer stop()
	for ctx.Err() == nil {
		i := next.Add(1) - 1
		if i >= w.cfg.requests {
			return
		}
		if w.conn == nil && !w.connect(ctx) {
			return
		}
		w.buf = appendRequest(w.buf[:0], w.cfg, i)
		t0 := time.Now()
		w.arm(ctx, t0.Add(w.cfg.timeout))
		action, err := w.roundTrip()
		if err != nil {
			if ctx.Err() != nil {
				return // the run ended during this request: not an error
			}
			if errors.Is(err, errBadReply) {
				w.st.fail(&w.st.badReplies, err)
			} else {
				w.st.fail(&w.st.ioErrs, err)
			}
			w.setConn(nil)
			continue
		}
		w.hist.add(time.Since(t0))
		w.st.ok.Add(1)
		verb := actionVerb(action)
		if _, ok := w.actions[verb]; ok || len(w.actions) < 32 {
			w.actions[verb]++
		} else {
			w.actions["(other)"]++
		}
	}
}

// connect dials, retrying with a short pause until the run ends.
func (w *worker) connect(ctx context.Context) bool {
	d := net.Dialer{Timeout: w.cfg.timeout}
	for pause := 10 * time.Millisecond; ctx.Err() == nil; pause = min(2*pause, time.Second) {
		c, err := d.DialContext(ctx, w.cfg.network, w.cfg.address)
		if err == nil {
			w.setConn(c)
			w.r = bufio.NewReader(c)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		w.st.fail(&w.st.connErrs, err)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
	return false
}

// setConn replaces the connection, closing the old one.
func (w *worker) setConn(c net.Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		w.conn.Close()
	}
	w.conn = c
}

// arm sets the connection's deadline, or an expired one once the run has
// ended (atomic with the interrupt in loop, which holds mu too).
func (w *worker) arm(ctx context.Context, d time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ctx.Err() != nil {
		d = time.Unix(1, 0)
	}
	w.conn.SetDeadline(d)
}

var errBadReply = errors.New("bad reply")

// roundTrip writes the request in one write and reads "action=..." plus the
// empty line. Attributes other than action are allowed and ignored.
func (w *worker) roundTrip() (string, error) {
	if _, err := w.conn.Write(w.buf); err != nil {
		return "", err
	}
	action := ""
	for n := 0; ; n++ {
		line, err := w.r.ReadSlice('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		l := strings.TrimRight(string(line), "\r\n")
		if l == "" {
			if action == "" {
				return "", fmt.Errorf("%w: no action", errBadReply)
			}
			return action, nil
		}
		if a, ok := strings.CutPrefix(l, "action="); ok {
			action = a
		}
		if n > 16 {
			return "", fmt.Errorf("%w: too many lines", errBadReply)
		}
	}
}

// actionVerb is the first word of an action; numeric replies become 4xx/5xx.
func actionVerb(action string) string {
	verb, _, _ := strings.Cut(action, " ")
	if len(verb) == 3 && (verb[0] == '4' || verb[0] == '5') {
		if _, err := strconv.Atoi(verb); err == nil {
			return verb[:1] + "xx"
		}
	}
	return strings.ToUpper(verb)
}

// appendRequest appends request i of the workload: what Postfix 3.7 sends
// at RCPT TO for a TLS client with no SASL (queue_id empty: Postfix opens
// the queue file only after a valid recipient).
func appendRequest(b []byte, cfg config, i int64) []byte {
	h := mix64(cfg.seed ^ uint64(i)*0x9e3779b97f4a7c15)
	triplet := h // "new": every request its own triplet
	repeat := cfg.workload == "repeat" || (cfg.workload == "mix" && h&1 == 0)
	if repeat {
		// A stream of its own, so that no "new" triplet is one of the set.
		triplet = mix64(mix64(cfg.seed+0x5bd1e995) + uint64(i%int64(cfg.triplets))*0x632be59bd9b4e019)
	}
	a := byte(11 + triplet%212) // 11..222
	if a == 127 {
		a = 128
	}
	ip := fmt.Sprintf("%d.%d.%d.%d", a, byte(triplet>>8), byte(triplet>>16), 1+byte(triplet>>24)%254)
	domain := fmt.Sprintf("sender%d.example", triplet>>32%5000)
	client := fmt.Sprintf("mail%d.%s", triplet>>40%4, domain)
	if triplet>>44%8 == 0 {
		client = "unknown"
	}
	sender := fmt.Sprintf("user%d@%s", triplet>>48%1000, domain)
	recipient := fmt.Sprintf("rcpt%d@dest%d.example", triplet>>20%500, triplet>>56%10)
	attrs := [][2]string{
		{"request", "smtpd_access_policy"},
		{"protocol_state", "RCPT"},
		{"protocol_name", "ESMTP"},
		{"helo_name", strings.Replace(client, "unknown", "["+ip+"]", 1)},
		{"queue_id", ""},
		{"sender", sender},
		{"recipient", recipient},
		{"recipient_count", "0"},
		{"client_address", ip},
		{"client_name", client},
		{"reverse_client_name", client},
		{"instance", fmt.Sprintf("%x.%x.%x.0", h>>48, h&0xffffffff, i&0xfffff)},
		{"sasl_method", ""},
		{"sasl_username", ""},
		{"sasl_sender", ""},
		{"size", strconv.FormatUint(1000+h>>20%100000, 10)},
		{"ccert_subject", ""},
		{"ccert_issuer", ""},
		{"ccert_fingerprint", ""},
		{"ccert_pubkey_fingerprint", ""},
		{"encryption_protocol", "TLSv1.3"},
		{"encryption_cipher", "TLS_AES_256_GCM_SHA384"},
		{"encryption_keysize", "256"},
		{"etrn_domain", ""},
		{"stress", ""},
		{"client_port", strconv.FormatUint(1024+h>>30%64000, 10)},
		{"policy_context", ""},
		{"server_address", "198.51.100.25"},
		{"server_port", "25"},
	}
	for _, kv := range attrs {
		b = append(b, kv[0]...)
		b = append(b, '=')
		b = append(b, kv[1]...)
		b = append(b, '\n')
	}
	return append(b, '\n')
}

// mix64 is SplitMix64's finalizer: cheap, well-spread, no shared state.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// histogram records durations in log-linear buckets (64 per power of two:
// under 1.6% error) in fixed memory, whatever the run length.
type histogram struct {
	counts [128 + 40*64]int64
	n      int64
	max    time.Duration
}

func bucketOf(ns uint64) int {
	if ns < 128 {
		return int(ns)
	}
	e := bits.Len64(ns) - 7 // ns>>e is in [64,128)
	i := 128 + (e-1)*64 + int(ns>>e) - 64
	return min(i, len(histogram{}.counts)-1)
}

// lowerBound is the smallest duration in bucket i.
func lowerBound(i int) time.Duration {
	if i < 128 {
		return time.Duration(i)
	}
	e := (i-128)/64 + 1
	m := uint64((i-128)%64 + 64)
	return time.Duration(m << e)
}

func (h *histogram) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the lower bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n-1)) + 1
	if rank >= h.n {
		return h.max
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(lowerBound(i), h.max)
		}
	}
	return h.max
}

func (st *stats) print(w io.Writer, cfg config) {
	ok := st.ok.Load()
	secs := st.elapsed.Seconds()
	fmt.Fprintf(w, "target:    %s:%s, %d connections, workload %s\n", cfg.network, cfg.address, cfg.conns, cfg.workload)
	fmt.Fprintf(w, "requests:  %d answered in %.2fs: %.0f req/s\n", ok, secs, float64(ok)/max(secs, 1e-9))
	h := &st.hist
	fmt.Fprintf(w, "latency:   p50 %v  p90 %v  p99 %v  max %v\n",
		round(h.quantile(0.50)), round(h.quantile(0.90)), round(h.quantile(0.99)), round(h.max))
	verbs := make([]string, 0, len(st.actions))
	for v := range st.actions {
		verbs = append(verbs, v)
	}
	sort.Strings(verbs)
	fmt.Fprint(w, "actions:  ")
	for _, v := range verbs {
		fmt.Fprintf(w, " %s %d", v, st.actions[v])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "errors:    connect %d, io %d, bad reply %d\n", st.connErrs.Load(), st.ioErrs.Load(), st.badReplies.Load())
	if e, ok := st.firstErr.Load().(string); ok {
		fmt.Fprintf(w, "first error: %s\n", e)
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond / 10)
}
