package main

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"postgate/policy"
)

// TestRunAgainstServer drives a real policy.Server on loopback TCP with a
// greylisting-like check that defers the first sight of each triplet.
func TestRunAgainstServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var mu = make(chan struct{}, 1)
	grey := checkFunc(func(_ context.Context, req *policy.Request, d *policy.Decision) error {
		mu <- struct{}{}
		defer func() { <-mu }()
		key := req.ClientAddress + "/" + req.Sender + "/" + req.Recipient
		if !seen[key] {
			seen[key] = true
			d.DeferIfPermit("Greylisted", "new")
			return nil
		}
		d.AddHeader("X-Greylist", "passed")
		return nil
	})
	log := slog.New(slog.DiscardHandler)
	s := policy.NewServer(policy.NewPipeline(policy.PipelineOptions{Logger: log}, grey), policy.ServerOptions{Logger: log})
	go s.Serve(l)
	defer s.Shutdown(context.Background())

	for i, tt := range []struct {
		workload  string
		wantDUNNO bool
	}{{"new", false}, {"repeat", true}, {"mix", true}} {
		cfg := config{addr: "inet:" + l.Addr().String(), conns: 4, requests: 400, duration: time.Minute,
			workload: tt.workload, triplets: 10, seed: uint64(7 + i), timeout: 10 * time.Second}
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		st := run(context.Background(), cfg)
		if st.ok.Load() != 400 || st.ioErrs.Load()+st.connErrs.Load()+st.badReplies.Load() != 0 {
			t.Errorf("%s: ok %d, errors %d/%d/%d", tt.workload, st.ok.Load(), st.ioErrs.Load(), st.connErrs.Load(), st.badReplies.Load())
		}
		var total int64
		for _, n := range st.actions {
			total += n
		}
		if total != 400 || st.hist.n != 400 {
			t.Errorf("%s: actions %v, histogram %d", tt.workload, st.actions, st.hist.n)
		}
		if tt.workload == "new" && st.actions["DEFER_IF_PERMIT"] != 400 {
			t.Errorf("new: every triplet should be new: %v", st.actions)
		}
		if tt.workload == "repeat" && st.actions["DEFER_IF_PERMIT"] != 10 {
			t.Errorf("repeat: only the 10 triplets' first sight defers: %v", st.actions)
		}
		if tt.workload == "mix" && (st.actions["DEFER_IF_PERMIT"] < 100 || st.actions["PREPEND"] < 100) {
			t.Errorf("mix: want about half new: %v", st.actions)
		}
		if tt.wantDUNNO && st.actions["DUNNO"]+st.actions["PREPEND"] == 0 {
			t.Errorf("%s: no passes: %v", tt.workload, st.actions)
		}
		var out bytes.Buffer
		st.print(&out, cfg)
		for _, want := range []string{"req/s", "p50", "p99", "DEFER_IF_PERMIT", "errors:    connect 0, io 0, bad reply 0"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: report lacks %q:\n%s", tt.workload, want, out.String())
			}
		}
	}
}

// TestRunStopsAtDuration: a server that never answers; the run ends at
// -duration without counting the interrupted requests as errors.
func TestRunStopsAtDuration(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // read nothing, answer nothing
		}
	}()
	cfg := config{addr: l.Addr().String(), conns: 3, requests: 1 << 40, duration: 200 * time.Millisecond,
		workload: "mix", triplets: 5, seed: 1, timeout: time.Minute}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	done := make(chan *stats, 1)
	go func() { done <- run(context.Background(), cfg) }()
	select {
	case st := <-done:
		if st.ok.Load() != 0 || st.ioErrs.Load() != 0 {
			t.Errorf("ok %d io errors %d", st.ok.Load(), st.ioErrs.Load())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop at -duration")
	}
}

func TestRequestsAreRealistic(t *testing.T) {
	cfg := config{workload: "new", triplets: 1, seed: 3}
	var buf []byte
	senders := map[string]bool{}
	nets := map[string]bool{}
	for i := range int64(200) {
		buf = appendRequest(buf[:0], cfg, i)
		req, err := policy.ReadRequest(bufio.NewReader(bytes.NewReader(buf)), policy.Limits{})
		if err != nil {
			t.Fatalf("request %d does not parse: %v\n%s", i, err, buf)
		}
		if len(req.Attrs) != 29 || req.Request != policy.RequestType || req.ProtocolState != "RCPT" ||
			!req.ClientIP.Is4() || req.ClientIP.IsLoopback() || req.Instance == "" {
			t.Fatalf("request %d: %+v", i, req)
		}
		senders[req.Sender] = true
		nets[req.ClientAddress[:strings.LastIndexByte(req.ClientAddress, '.')]] = true
	}
	if len(senders) < 150 || len(nets) < 150 {
		t.Errorf("new workload not varied: %d senders, %d /24s", len(senders), len(nets))
	}
	cfg.workload = "repeat"
	cfg.triplets = 3
	a := string(appendRequest(nil, cfg, 1))
	b := string(appendRequest(nil, cfg, 4))
	pick := func(s, name string) string {
		for _, l := range strings.Split(s, "\n") {
			if v, ok := strings.CutPrefix(l, name+"="); ok {
				return v
			}
		}
		return ""
	}
	for _, name := range []string{"client_address", "sender", "recipient"} {
		if pick(a, name) != pick(b, name) {
			t.Errorf("repeat: %s differs between cycles: %q %q", name, pick(a, name), pick(b, name))
		}
	}
	if pick(a, "instance") == pick(b, "instance") {
		t.Error("repeat: instance must differ per delivery attempt")
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Microsecond, 0.9: 900 * time.Microsecond, 0.99: 990 * time.Microsecond} {
		got := h.quantile(q)
		if diff := got - want; diff < -want/50 || diff > want/50 {
			t.Errorf("quantile(%v) = %v, want %v ±2%%", q, got, want)
		}
	}
	if h.max != time.Millisecond || h.quantile(1) != time.Millisecond {
		t.Errorf("max %v q1 %v", h.max, h.quantile(1))
	}
	for _, d := range []uint64{0, 1, 127, 128, 129, 1 << 20, 1<<20 + 12345, 1 << 62} {
		if lb := lowerBound(bucketOf(d)); uint64(lb) > d && bucketOf(d) != len(h.counts)-1 {
			t.Errorf("bucket of %d starts at %d", d, lb)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string][2]string{
		"inet:127.0.0.1:10040":    {"tcp", "127.0.0.1:10040"},
		"inet:[::1]:10023":        {"tcp", "[::1]:10023"},
		"unix:/run/postgrey.sock": {"unix", "/run/postgrey.sock"},
		"/run/x.sock":             {"unix", "/run/x.sock"},
		"localhost:10023":         {"tcp", "localhost:10023"},
	} {
		n, a, err := parseAddr(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("parseAddr(%q) = %q %q %v", in, n, a, err)
		}
	}
	if _, _, err := parseAddr("nonsense"); err == nil {
		t.Error("parseAddr(nonsense) succeeded")
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"inet:127.0.0.1:10040", "unix:/x", "/x", "h:1", "x", "inet:", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, a, err := parseAddr(s)
		if err != nil {
			return
		}
		if n != "tcp" && n != "unix" {
			t.Fatalf("network %q", n)
		}
		if !strings.HasSuffix(s, a) {
			t.Fatalf("address %q not taken from %q", a, s)
		}
	})
}

type checkFunc func(ctx context.Context, req *policy.Request, d *policy.Decision) error

func (checkFunc) Name() string { return "test" }
func (f checkFunc) Check(ctx context.Context, req *policy.Request, d *policy.Decision) error {
	return f(ctx, req, d)
}
