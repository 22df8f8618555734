package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/dnstest"
)

const soa = "example.com. 300 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60"

var zone = dnstest.Zone{
	soa,
	`example.com. 300 IN TXT "v=spf1 " "ip4:192.0.2.0/24 " "-all"`,
	`example.com. 300 IN TXT "second"`,
	`quoted.example.com. 300 IN TXT "say \"hi\" \\ back\255slash"`,
	"example.com. 300 IN MX 20 mx2.example.com.",
	"example.com. 300 IN MX 10 mx1.example.com.",
	"mail.example.com. 300 IN A 192.0.2.25",
	"mail.example.com. 300 IN A 192.0.2.26",
	"mail.example.com. 300 IN AAAA 2001:db8::25",
	"v4only.example.com. 300 IN A 192.0.2.4",
	"www.example.com. 10 IN CNAME mail.example.com.",
	"25.2.0.192.in-addr.arpa. 300 IN PTR mail.example.com.",
	"5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR mail.example.com.",
	`a\032b%c.example.com. 300 IN TXT "spaced"`,
	"zero.example.com. 0 IN TXT zero",
	"2.0.0.127.zen.test. 300 IN A 127.0.0.2", // no SOA for test.
}

// clock is a settable clock for cache expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newResolver returns a resolver asking srvs in order, with a short
// timeout so that dropped queries do not slow the tests.
func newResolver(t testing.TB, opts Options, srvs ...*dnstest.Server) *DNS {
	t.Helper()
	for _, s := range srvs {
		opts.Servers = append(opts.Servers, s.Addr)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 300 * time.Millisecond
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// dnsError asserts that err is an unwrapped *net.DNSError.
func dnsError(t *testing.T, err error) *net.DNSError {
	t.Helper()
	de, ok := err.(*net.DNSError)
	if !ok {
		t.Fatalf("error %v (%T) is not an unwrapped *net.DNSError", err, err)
	}
	return de
}

func TestLookups(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	r := newResolver(t, Options{}, srv)
	ctx := t.Context()

	txt, err := r.LookupTXT(ctx, "example.com")
	if want := []string{"v=spf1 ip4:192.0.2.0/24 -all", "second"}; err != nil || !slices.Equal(txt, want) {
		t.Errorf("LookupTXT = %q, %v; want %q", txt, err, want)
	}
	txt, err = r.LookupTXT(ctx, "quoted.example.com")
	if want := []string{"say \"hi\" \\ back\xffslash"}; err != nil || !slices.Equal(txt, want) {
		t.Errorf("LookupTXT(quoted) = %q, %v; want %q", txt, err, want)
	}

	mx, err := r.LookupMX(ctx, "example.com.")
	if err != nil || len(mx) != 2 || *mx[0] != (net.MX{Host: "mx1.example.com.", Pref: 10}) ||
		*mx[1] != (net.MX{Host: "mx2.example.com.", Pref: 20}) {
		t.Errorf("LookupMX = %v, %v", mx, err)
	}

	a, err := r.LookupA(ctx, "mail.example.com")
	if want := []netip.Addr{netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("192.0.2.26")}; err != nil || !slices.Equal(a, want) {
		t.Errorf("LookupA = %v, %v; want %v", a, err, want)
	}

	ips, err := r.LookupIPAddr(ctx, "mail.example.com")
	if got := fmt.Sprint(ips); err != nil || got != "[{192.0.2.25 } {192.0.2.26 } {2001:db8::25 }]" {
		t.Errorf("LookupIPAddr = %s, %v", got, err)
	}
	ips, err = r.LookupIPAddr(ctx, "v4only.example.com")
	if got := fmt.Sprint(ips); err != nil || got != "[{192.0.2.4 }]" {
		t.Errorf("LookupIPAddr(v4only) = %s, %v", got, err)
	}

	for _, addr := range []string{"192.0.2.25", "2001:db8::25"} {
		names, err := r.LookupAddr(ctx, addr)
		if err != nil || !slices.Equal(names, []string{"mail.example.com."}) {
			t.Errorf("LookupAddr(%s) = %q, %v", addr, names, err)
		}
	}
	_, err = r.LookupAddr(ctx, "192.0.2.99")
	if de := dnsError(t, err); !IsNXDomain(err) || de.Name != "192.0.2.99" {
		t.Errorf("LookupAddr(unknown) error = %#v", de)
	}
	_, err = r.LookupAddr(ctx, "not an address")
	if de := dnsError(t, err); de.IsNotFound || de.IsTemporary {
		t.Errorf("LookupAddr(bad) error = %#v, want neither not-found nor temporary", de)
	}

	ans, err := r.Query(ctx, "example.com", dns.TypeSOA)
	if err != nil || len(ans.Records) != 1 || ans.Records[0].(*dns.SOA).Minttl != 60 || ans.Name != "example.com." {
		t.Errorf("Query(SOA) = %+v, %v", ans, err)
	}

	// Every query asked for recursion with EDNS0 at 1232 bytes, over UDP.
	for _, q := range srv.Log() {
		if !q.RD || q.UDPSize != 1232 || q.Net != "udp" {
			t.Errorf("query %+v: want RD, EDNS0 1232, UDP", q)
		}
	}
}

func TestErrors(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	srv.Fail("servfail.example.com", dns.RcodeServerFailure)
	srv.Fail("refused.example.com", dns.RcodeRefused)
	srv.Drop("dropped.example.com")
	r := newResolver(t, Options{Timeout: 100 * time.Millisecond}, srv)

	tests := []struct {
		name                     string
		errText                  string
		notFound, temp, timeout  bool
		nxdomain, nodata, server bool
	}{
		{name: "nope.example.com", errText: ErrNoSuchHost, notFound: true, nxdomain: true, server: true},
		{name: "mail.example.com", errText: ErrNoSuchRecord, notFound: true, nodata: true, server: true},
		{name: "nothing.test", errText: ErrNoSuchHost, notFound: true, nxdomain: true, server: true},
		{name: "servfail.example.com", errText: "server misbehaving: SERVFAIL", temp: true, server: true},
		{name: "refused.example.com", errText: "server misbehaving: REFUSED", temp: true, server: true},
		{name: "dropped.example.com", errText: "i/o timeout", temp: true, timeout: true, server: true},
		// Cannot be asked at all: a 64-byte label.
		{name: fmt.Sprintf("%064d.example.com", 0), errText: ErrNoSuchHost, notFound: true, nxdomain: true},
		{name: "", errText: ErrNoSuchHost, notFound: true, nxdomain: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.LookupTXT(t.Context(), tt.name)
			de := dnsError(t, err)
			if de.Err != tt.errText || de.Name != tt.name || de.IsNotFound != tt.notFound ||
				de.IsTemporary != tt.temp || de.IsTimeout != tt.timeout {
				t.Errorf("error = %#v", de)
			}
			if (de.Server == srv.Addr) != tt.server {
				t.Errorf("Server = %q, want %v", de.Server, tt.server)
			}
			if IsNXDomain(err) != tt.nxdomain || IsNoData(err) != tt.nodata || IsTemporary(err) != tt.temp {
				t.Errorf("IsNXDomain %v, IsNoData %v, IsTemporary %v", IsNXDomain(err), IsNoData(err), IsTemporary(err))
			}
		})
	}
	if n := srv.Queries(fmt.Sprintf("%064d.example.com", 0), 0); n != 0 {
		t.Errorf("an impossible name was sent %d times", n)
	}
}

func TestFailover(t *testing.T) {
	good := dnstest.NewServer(t, zone)
	for _, tt := range []struct {
		name        string
		breakServer func(*dnstest.Server)
	}{
		{"servfail", func(s *dnstest.Server) { s.Fail(dnstest.AllNames, dns.RcodeServerFailure) }},
		{"refused", func(s *dnstest.Server) { s.Fail(dnstest.AllNames, dns.RcodeRefused) }},
		{"notimp", func(s *dnstest.Server) { s.Fail(dnstest.AllNames, dns.RcodeNotImplemented) }},
		{"timeout", func(s *dnstest.Server) { s.Drop(dnstest.AllNames) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := dnstest.NewServer(t, zone)
			tt.breakServer(bad)
			good.ResetLog()
			r := newResolver(t, Options{Timeout: 100 * time.Millisecond}, bad, good)
			txt, err := r.LookupTXT(t.Context(), "example.com")
			if err != nil || len(txt) != 2 {
				t.Fatalf("LookupTXT = %q, %v", txt, err)
			}
			if b, g := bad.Queries("example.com", dns.TypeTXT), good.Queries("example.com", dns.TypeTXT); b != 1 || g != 1 {
				t.Errorf("queries: %d to the broken server, %d to the good one; want 1 and 1", b, g)
			}
		})
	}

	t.Run("network error", func(t *testing.T) {
		// A UDP port nobody listens on: the kernel answers port unreachable.
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := pc.LocalAddr().String()
		pc.Close()
		r, err := New(Options{Servers: []string{closed, good.Addr}, Timeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if txt, err := r.LookupTXT(t.Context(), "example.com"); err != nil || len(txt) != 2 {
			t.Errorf("LookupTXT = %q, %v", txt, err)
		}
	})

	t.Run("nxdomain is an answer", func(t *testing.T) {
		first := dnstest.NewServer(t, zone)
		second := dnstest.NewServer(t, zone)
		r := newResolver(t, Options{}, first, second)
		if _, err := r.LookupTXT(t.Context(), "nope.example.com"); !IsNXDomain(err) {
			t.Errorf("err = %v, want NXDOMAIN", err)
		}
		if n := second.Queries(dnstest.AllNames, 0); n != 0 {
			t.Errorf("second server asked %d times after an NXDOMAIN", n)
		}
	})

	t.Run("all fail", func(t *testing.T) {
		a := dnstest.NewServer(t, zone)
		b := dnstest.NewServer(t, zone)
		a.Fail(dnstest.AllNames, dns.RcodeServerFailure)
		b.Drop(dnstest.AllNames)
		r := newResolver(t, Options{Timeout: 100 * time.Millisecond}, a, b)
		_, err := r.LookupTXT(t.Context(), "example.com")
		de := dnsError(t, err)
		if !de.IsTemporary || !de.IsTimeout || de.Server != b.Addr {
			t.Errorf("error = %#v, want the last server's timeout", de)
		}
		// Not cached: the next lookup asks again.
		_, _ = r.LookupTXT(t.Context(), "example.com")
		if n := a.Queries("example.com", dns.TypeTXT); n != 2 {
			t.Errorf("first server asked %d times, want 2 (failures are not cached)", n)
		}
	})
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	srv.Truncate("example.com")
	r := newResolver(t, Options{}, srv)
	txt, err := r.LookupTXT(t.Context(), "example.com")
	if err != nil || len(txt) != 2 {
		t.Fatalf("LookupTXT = %q, %v", txt, err)
	}
	var nets []string
	for _, q := range srv.Log() {
		nets = append(nets, q.Net)
	}
	if !slices.Equal(nets, []string{"udp", "tcp"}) {
		t.Errorf("transports used: %v, want udp then tcp", nets)
	}

	// A real answer bigger than 1232 bytes.
	for i := range 40 {
		srv.Add(fmt.Sprintf(`big.example.com. 300 IN TXT "%02d %060d"`, i, 0))
	}
	txt, err = r.LookupTXT(t.Context(), "big.example.com")
	if err != nil || len(txt) != 40 || txt[39] != fmt.Sprintf("39 %060d", 0) {
		t.Errorf("big LookupTXT: %d records, %v", len(txt), err)
	}
	if n := srv.Queries("big.example.com", 0); n != 2 {
		t.Errorf("big answer took %d queries, want 2 (UDP, TCP)", n)
	}
}

func TestCacheTTL(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	clk := newClock()
	r := newResolver(t, Options{Now: clk.Now}, srv)
	ctx := t.Context()
	count := func(name string) int { return srv.Queries(name, dns.TypeTXT) }

	for range 3 {
		if _, err := r.LookupTXT(ctx, "example.com"); err != nil {
			t.Fatal(err)
		}
	}
	if n := count("example.com"); n != 1 {
		t.Fatalf("3 lookups within the TTL made %d queries", n)
	}
	// Names differ in case and trailing dot only: the same entry.
	if _, err := r.LookupTXT(ctx, "EXAMPLE.Com."); err != nil || count("example.com") != 1 {
		t.Errorf("case-folded lookup: err %v, %d queries", err, count("example.com"))
	}
	ans, err := r.Query(ctx, "example.com", dns.TypeTXT)
	if err != nil || ans.TTL != 300*time.Second {
		t.Errorf("Query TTL = %v, %v; want 5m", ans.TTL, err)
	}
	clk.Advance(299 * time.Second)
	ans, err = r.Query(ctx, "example.com", dns.TypeTXT)
	if err != nil || ans.TTL != time.Second || count("example.com") != 1 {
		t.Errorf("at 299s: TTL %v, err %v, %d queries", ans.TTL, err, count("example.com"))
	}
	clk.Advance(time.Second)
	if _, err := r.LookupTXT(ctx, "example.com"); err != nil || count("example.com") != 2 {
		t.Errorf("at 300s: err %v, %d queries; want a new query", err, count("example.com"))
	}

	// TTL 0 is not cached.
	for range 2 {
		if txt, err := r.LookupTXT(ctx, "zero.example.com"); err != nil || txt[0] != "zero" {
			t.Fatal(txt, err)
		}
	}
	if n := count("zero.example.com"); n != 2 {
		t.Errorf("TTL 0: %d queries for 2 lookups", n)
	}

	// A CNAME's shorter TTL bounds the answer.
	for range 2 {
		if _, err := r.LookupA(ctx, "www.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(10 * time.Second)
	if _, err := r.LookupA(ctx, "www.example.com"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Queries("www.example.com", dns.TypeA); n != 2 {
		t.Errorf("CNAME TTL 10: %d queries, want 2", n)
	}
}

func TestCacheClamp(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"long.example.org. 86400 IN A 192.0.2.1",
		"zero.example.org. 0 IN A 192.0.2.2",
		"nosoa.example.org. 0 IN TXT x", // the example.org zone has no SOA
	})
	clk := newClock()
	r := newResolver(t, Options{Now: clk.Now, MaxTTL: time.Hour, MinTTL: 30 * time.Second}, srv)
	ctx := t.Context()
	lookups := func() {
		t.Helper()
		for _, name := range []string{"long.example.org", "zero.example.org", "nosoa.example.org", "gone.example.org"} {
			_, err := r.LookupA(ctx, name)
			if err != nil && !IsNoData(err) && !IsNXDomain(err) {
				t.Fatal(err)
			}
		}
	}
	lookups()
	clk.Advance(29 * time.Second)
	lookups()
	want := map[string]int{"long.example.org": 1, "zero.example.org": 1, "nosoa.example.org": 2, "gone.example.org": 2}
	for name, n := range want {
		if got := srv.Queries(name, dns.TypeA); got != n {
			t.Errorf("at 29s, %s: %d queries, want %d", name, got, n)
		}
	}
	clk.Advance(time.Second) // MinTTL over
	lookups()
	if got := srv.Queries("zero.example.org", dns.TypeA); got != 2 {
		t.Errorf("at 30s, zero TTL raised to MinTTL: %d queries, want 2", got)
	}
	clk.Advance(time.Hour - 30*time.Second) // MaxTTL over for the 1-day record
	lookups()
	if got := srv.Queries("long.example.org", dns.TypeA); got != 2 {
		t.Errorf("at 1h, TTL 1d clamped to 1h: %d queries, want 2", got)
	}
}

func TestNegativeCache(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		// Negative TTL = min(SOA TTL, MINIMUM): 60 here, 30 for short.example.
		"example.com. 300 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
		"mail.example.com. 300 IN A 192.0.2.25",
		"short.example. 30 IN SOA ns.short.example. hostmaster.short.example. 1 3600 600 86400 600",
	})
	clk := newClock()
	r := newResolver(t, Options{Now: clk.Now}, srv)
	ctx := t.Context()
	for _, tt := range []struct {
		name  string
		check func(error) bool
		ttl   time.Duration
	}{
		{"nope.example.com", IsNXDomain, 60 * time.Second},
		{"mail.example.com", IsNoData, 60 * time.Second},
		{"nope.short.example", IsNXDomain, 30 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 {
				if _, err := r.LookupTXT(ctx, tt.name); !tt.check(err) {
					t.Fatalf("err = %v", err)
				}
			}
			clk.Advance(tt.ttl - time.Second)
			if _, err := r.LookupTXT(ctx, tt.name); !tt.check(err) {
				t.Fatalf("cached err = %v", err)
			}
			if n := srv.Queries(tt.name, dns.TypeTXT); n != 1 {
				t.Errorf("%d queries within the negative TTL, want 1", n)
			}
			clk.Advance(time.Second)
			if _, err := r.LookupTXT(ctx, tt.name); !tt.check(err) {
				t.Fatalf("err = %v", err)
			}
			if n := srv.Queries(tt.name, dns.TypeTXT); n != 2 {
				t.Errorf("%d queries after the negative TTL, want 2", n)
			}
		})
	}
}

func TestCacheSize(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"a.example. 300 IN A 192.0.2.1",
		"b.example. 300 IN A 192.0.2.2",
		"c.example. 300 IN A 192.0.2.3",
	})
	r := newResolver(t, Options{CacheSize: 2}, srv)
	ctx := t.Context()
	for _, name := range []string{"a.example", "b.example", "a.example", "c.example", "a.example", "b.example"} {
		if _, err := r.LookupA(ctx, name); err != nil {
			t.Fatal(err)
		}
		if n := r.cache.len(); n > 2 {
			t.Fatalf("cache holds %d entries, bound is 2", n)
		}
	}
	// a stays (used before c came), b was the least recently used when c came.
	for name, want := range map[string]int{"a.example": 1, "b.example": 2, "c.example": 1} {
		if n := srv.Queries(name, dns.TypeA); n != want {
			t.Errorf("%s: %d queries, want %d", name, n, want)
		}
	}

	off := newResolver(t, Options{CacheSize: -1}, srv)
	srv.ResetLog()
	for range 2 {
		if _, err := off.LookupA(ctx, "a.example"); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Queries("a.example", dns.TypeA); n != 2 {
		t.Errorf("cache disabled: %d queries, want 2", n)
	}
}

func TestCoalescing(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	srv.Delay("example.com", 100*time.Millisecond)
	r := newResolver(t, Options{}, srv)

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			name := "example.com"
			if i%2 == 1 {
				name = "Example.COM." // same key
			}
			txt, err := r.LookupTXT(context.Background(), name)
			if err == nil && len(txt) != 2 {
				err = fmt.Errorf("got %q", txt)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if q := srv.Queries("example.com", dns.TypeTXT); q != 1 {
		t.Errorf("%d concurrent lookups made %d upstream queries, want 1", n, q)
	}
}

func TestWaiterCancelDoesNotCancelQuery(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	srv.Delay("example.com", 300*time.Millisecond)
	r := newResolver(t, Options{Timeout: 2 * time.Second}, srv)

	// The first caller starts the query and then gives up.
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := r.LookupTXT(ctx, "example.com")
		firstErr <- err
	}()
	for i := 0; srv.Queries("example.com", dns.TypeTXT) == 0; i++ {
		if i == 200 {
			t.Fatal("the query never reached the server")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A second caller joins; then the first one cancels.
	secondRes := make(chan error, 1)
	go func() {
		txt, err := r.LookupTXT(context.Background(), "example.com")
		if err == nil && len(txt) != 2 {
			err = fmt.Errorf("got %q", txt)
		}
		secondRes <- err
	}()
	cancel()
	err := <-firstErr
	if de := dnsError(t, err); !de.IsTemporary || de.IsTimeout || de.Err != context.Canceled.Error() {
		t.Errorf("cancelled caller: %#v", de)
	}
	if err := <-secondRes; err != nil {
		t.Errorf("second caller: %v", err)
	}
	if q := srv.Queries("example.com", dns.TypeTXT); q != 1 {
		t.Errorf("%d upstream queries, want 1", q)
	}

	// A caller whose deadline passes gets a timeout.
	srv.Delay("mail.example.com", 300*time.Millisecond)
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer dcancel()
	_, err = r.LookupA(dctx, "mail.example.com")
	if de := dnsError(t, err); !de.IsTimeout || !de.IsTemporary || de.Name != "mail.example.com" {
		t.Errorf("deadline: %#v", de)
	}
}

// TestEndedContext: a caller whose context has already ended gets its
// context's error, cached answer or not, and no query is sent for it.
func TestEndedContext(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	r := newResolver(t, Options{}, srv)
	if _, err := r.LookupTXT(t.Context(), "example.com"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, name := range []string{"example.com", "mail.example.com"} {
		_, err := r.LookupTXT(ctx, name)
		if de := dnsError(t, err); !de.IsTemporary || de.IsTimeout || de.Err != context.Canceled.Error() || de.Name != name {
			t.Errorf("%s: %#v", name, de)
		}
	}
	if q := srv.Queries("mail.example.com", dns.TypeTXT); q != 0 {
		t.Errorf("%d queries sent for a caller that had given up", q)
	}
}

func TestOddNames(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	r := newResolver(t, Options{}, srv)
	for _, name := range []string{"a b%c.example.com", "A B%C.example.com."} {
		txt, err := r.LookupTXT(t.Context(), name)
		if err != nil || !slices.Equal(txt, []string{"spaced"}) {
			t.Errorf("LookupTXT(%q) = %q, %v", name, txt, err)
		}
	}
	log := srv.Log()
	if len(log) != 1 || log[0].Name != `a\ b%c.example.com.` {
		t.Errorf("queries sent: %+v; want one, for the name with a space", log)
	}
	_, err := r.LookupTXT(t.Context(), "x y%z.example.com")
	if de := dnsError(t, err); !IsNXDomain(err) || de.Name != "x y%z.example.com" {
		t.Errorf("error = %#v", de)
	}
}

func TestCNAME(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	r := newResolver(t, Options{Now: newClock().Now}, srv)
	ctx := t.Context()
	a, err := r.LookupA(ctx, "www.example.com")
	if err != nil || len(a) != 2 || a[0] != netip.MustParseAddr("192.0.2.25") {
		t.Errorf("LookupA(www) = %v, %v", a, err)
	}
	ans, err := r.Query(ctx, "www.example.com", dns.TypeAAAA)
	if err != nil || ans.Name != "mail.example.com." || len(ans.Records) != 1 || ans.TTL != 10*time.Second {
		t.Errorf("Query(www AAAA) = %+v, %v", ans, err)
	}
	// Asking for the CNAME itself does not follow it.
	ans, err = r.Query(ctx, "www.example.com", dns.TypeCNAME)
	if err != nil || len(ans.Records) != 1 || ans.Records[0].(*dns.CNAME).Target != "mail.example.com." {
		t.Errorf("Query(www CNAME) = %+v, %v", ans, err)
	}
	// A CNAME to a name without TXT is NODATA.
	if _, err := r.LookupTXT(ctx, "www.example.com"); !IsNoData(err) {
		t.Errorf("LookupTXT(www) err = %v, want NODATA", err)
	}
	// Mutating the answer does not touch the cache.
	ans.Records[0].(*dns.CNAME).Target = "changed."
	ans, _ = r.Query(ctx, "www.example.com", dns.TypeCNAME)
	if ans.Records[0].(*dns.CNAME).Target != "mail.example.com." {
		t.Errorf("cached record was modified through an Answer")
	}
}

func TestLookupIPAddrErrors(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	r := newResolver(t, Options{Timeout: 100 * time.Millisecond}, srv)
	ctx := t.Context()
	if _, err := r.LookupIPAddr(ctx, "nope.example.com"); !IsNXDomain(err) {
		t.Errorf("NXDOMAIN: err = %v", err)
	}
	if _, err := r.LookupIPAddr(ctx, "example.com"); !IsNoData(err) {
		t.Errorf("NODATA: err = %v", err)
	}
	srv.Set("mail.example.com", dns.TypeAAAA, dnstest.Behavior{Rcode: dns.RcodeServerFailure})
	if _, err := r.LookupIPAddr(ctx, "mail.example.com"); !IsTemporary(err) {
		t.Errorf("AAAA SERVFAIL: err = %v, want temporary", err)
	}
	if a, q := srv.Queries("mail.example.com", dns.TypeA), srv.Queries("mail.example.com", dns.TypeAAAA); a != 1 || q != 1 {
		t.Errorf("queries: %d A, %d AAAA; want 1 each", a, q)
	}
}

func TestMetrics(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	srv.Fail("servfail.example.com", dns.RcodeServerFailure)
	reg := prometheus.NewRegistry()
	r := newResolver(t, Options{Registerer: reg}, srv)
	ctx := t.Context()
	for range 3 {
		_, _ = r.LookupTXT(ctx, "example.com")
	}
	_, _ = r.LookupTXT(ctx, "nope.example.com")
	_, _ = r.LookupTXT(ctx, "servfail.example.com")

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"postgate_dns_cache_hits_total", nil, 2},
		{"postgate_dns_cache_misses_total", nil, 3},
		{"postgate_dns_queries_total", map[string]string{"qtype": "TXT", "rcode": "NOERROR"}, 1},
		{"postgate_dns_queries_total", map[string]string{"qtype": "TXT", "rcode": "NXDOMAIN"}, 1},
		{"postgate_dns_queries_total", map[string]string{"qtype": "TXT", "rcode": "SERVFAIL"}, 1},
		{"postgate_dns_query_duration_seconds", nil, 3}, // sample count
	} {
		if got := metricValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// A second resolver on the same registry (a reload) counts into the
	// collectors already registered.
	r2, err := New(Options{Servers: []string{srv.Addr}, Registerer: reg})
	if err != nil {
		t.Fatalf("second resolver on one registry: %v", err)
	}
	_, _ = r2.LookupTXT(ctx, "example.com")
	if got := metricValue(t, reg, "postgate_dns_cache_misses_total", nil); got != 4 {
		t.Errorf("after a second resolver: misses = %v, want 4", got)
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := New(Options{Servers: []string{"127.0.0.1"}}); err == nil {
		t.Error("server without port accepted")
	}
	if _, err := New(Options{Servers: []string{"127.0.0.1:53"}, MinTTL: 2 * time.Hour}); err == nil {
		t.Error("MinTTL above MaxTTL accepted")
	}
	r, err := New(Options{Servers: []string{"127.0.0.1:53"}})
	if err != nil || r.timeout != 2*time.Second || r.maxTTL != time.Hour || r.minTTL != 0 || r.cache.max != 10000 {
		t.Errorf("defaults: %+v, %v", r, err)
	}
}

func TestInterpretIgnoresForeignRecords(t *testing.T) {
	// An answer may carry records for other names; only the chain counts.
	resp := new(dns.Msg)
	resp.SetQuestion("a.example.", dns.TypeA)
	for _, s := range []string{
		"other.example. 5 IN A 192.0.2.9",
		"a.example. 100 IN CNAME b.example.",
		"b.example. 50 IN A 192.0.2.1",
		"b.example. 70 IN TXT foo",
	} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		resp.Answer = append(resp.Answer, rr)
	}
	e := interpret(resp.Question[0], resp, "s")
	if e.kind != kindFound || len(e.records) != 1 || e.owner != "b.example." || e.ttl != 50*time.Second {
		t.Errorf("entry = %+v", e)
	}
	if e.err("x") != nil {
		t.Errorf("found entry has an error")
	}
}

// metricValue returns the value of a counter, or the sample count of a
// histogram, with the given labels, as the registry exposes it.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}
