package spf

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postgate/internal/dnstest"
	"postgate/internal/resolver"
)

// cachedZone is a small world with real TTLs and an SOA, so answers and
// negative answers are cached.
var cachedZone = dnstest.Zone{
	"$TTL 300",
	"example.com. IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300",
	`example.com. IN TXT "v=spf1 include:_spf.example.com mx a:relay.example.com exists:%{ir}.bl.example.com -all exp=why.example.com"`,
	`_spf.example.com. IN TXT "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:1::/48 -all"`,
	"example.com. IN MX 10 mx1.example.com.",
	"mx1.example.com. IN A 192.0.2.10",
	"relay.example.com. IN A 192.0.2.20",
	`why.example.com. IN TXT "%{c} may not send mail as %{s}"`,
	"other.example. IN SOA ns.other.example. h.other.example. 1 3600 600 86400 300",
	`other.example. IN TXT "v=spf1 redirect=example.com"`,
}

func newChecker(t testing.TB, srv *dnstest.Server, cacheSize int, timeout time.Duration) *Checker {
	t.Helper()
	res, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, CacheSize: cacheSize, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Resolver: res, ReceiverName: "mx.receiver.example", Timeout: timeout})
}

func TestCheckResults(t *testing.T) {
	srv := dnstest.NewServer(t, cachedZone)
	c := newChecker(t, srv, -1, 0)
	ctx := context.Background()
	for _, tc := range []struct {
		ip, sender         string
		result, mechanism  string
		domain, explaining string
	}{
		{"198.51.100.7", "a@example.com", Pass, "ip4", "example.com", ""},
		{"2001:db8:1::25", "a@example.com", Pass, "ip6", "example.com", ""},
		{"192.0.2.10", "a@example.com", Pass, "mx", "example.com", ""},
		{"::ffff:192.0.2.20", "a@example.com", Pass, "a", "example.com", ""},
		{"203.0.113.9", "a@example.com", Fail, "all", "example.com", "203.0.113.9 may not send mail as a@example.com"},
		// exp= of the redirect target applies, with %{s} the original sender.
		{"203.0.113.9", "b@other.example", Fail, "all", "other.example", "203.0.113.9 may not send mail as b@other.example"},
		{"203.0.113.9", "@example.com", Fail, "all", "example.com", "203.0.113.9 may not send mail as postmaster@example.com"},
		{"203.0.113.9", "a@nothing.example.com", None, "", "nothing.example.com", ""},
	} {
		r := c.CheckMailFrom(ctx, netip.MustParseAddr(tc.ip), "helo.example.net", tc.sender)
		if r.Result != tc.result || r.Mechanism != tc.mechanism || r.Domain != tc.domain ||
			r.Explanation != tc.explaining || r.Identity != IdentityMailFrom || r.Sender != tc.sender {
			t.Errorf("%s from %s: got %+v; want %s by %s for %s, explanation %q",
				tc.sender, tc.ip, r, tc.result, tc.mechanism, tc.domain, tc.explaining)
		}
	}
}

func TestCheckHeloAndNullSender(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		`mail.example.org. TXT "v=spf1 a -all"`,
		"mail.example.org. A 192.0.2.1",
	})
	c := newChecker(t, srv, -1, 0)
	ip := netip.MustParseAddr("192.0.2.1")
	h := c.CheckHelo(context.Background(), ip, "mail.example.org")
	if h.Result != Pass || h.Identity != IdentityHelo || h.Domain != "mail.example.org" {
		t.Errorf("HELO: %+v", h)
	}
	m := c.CheckMailFrom(context.Background(), ip, "mail.example.org", "")
	if m.Result != Pass || m.Identity != IdentityMailFrom || m.Domain != "mail.example.org" || m.Sender != "" {
		t.Errorf("null sender: %+v", m)
	}
	// Section 4.3: no check at all for names that cannot be domains.
	for _, helo := range []string{"localhost", "[192.0.2.1]", "a..example.org", ""} {
		if r := c.CheckHelo(context.Background(), ip, helo); r.Result != None {
			t.Errorf("HELO %q: %s, want none", helo, r.Result)
		}
	}
	if n := srv.Queries("localhost", 0); n != 0 {
		t.Errorf("%d queries for a single-label name", n)
	}
}

func TestCheckErrors(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		`broken.example. TXT "v=spf1 include:servfail.example -all"`,
		`syntax.example. TXT "v=spf1 +all foo"`,
		`twice.example. TXT "v=spf1 -all"`,
		`twice.example. TXT "v=spf1 +all"`,
		`noinclude.example. TXT "v=spf1 include:nospf.example -all"`,
		`nospf.example. TXT "hello"`,
		`slow.example. TXT "v=spf1 a:slowhost.example -all"`,
	})
	srv.Fail("servfail.example", dns.RcodeServerFailure)
	srv.Drop("slowhost.example")
	c := newChecker(t, srv, -1, 0)
	ip := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct{ sender, result, problem string }{
		{"x@broken.example", TempError, "servfail.example"},
		{"x@syntax.example", PermError, `invalid SPF record at syntax.example: "foo": unknown mechanism`},
		{"x@twice.example", PermError, "twice.example has 2 SPF records"},
		{"x@noinclude.example", PermError, "no SPF record at nospf.example"},
	} {
		r := c.CheckMailFrom(context.Background(), ip, "h.example", tc.sender)
		if r.Result != tc.result || !strings.Contains(r.Problem, tc.problem) {
			t.Errorf("%s: %s (%s), want %s (%s)", tc.sender, r.Result, r.Problem, tc.result, tc.problem)
		}
	}
	// The evaluation as a whole is bounded by Options.Timeout, shorter
	// here than one query's timeout.
	short := newChecker(t, srv, -1, 100*time.Millisecond)
	r := short.CheckMailFrom(context.Background(), ip, "h.example", "x@slow.example")
	if r.Result != TempError || r.Problem != "SPF evaluation timed out" {
		t.Errorf("slow: %s (%s), want temperror by timeout", r.Result, r.Problem)
	}
}

// A record naming what looks like one of the placeholders must get that
// very name looked up, not the name the placeholder stands for.
func TestPlaceholderLookalike(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		`example.com. TXT "v=spf1 a:_0._postgate-spf.invalid a:_1._postgate-spf.invalid. -all"`,
		"example.com. A 192.0.2.99",
		"_1._postgate-spf.invalid. A 192.0.2.1",
	})
	c := newChecker(t, srv, -1, 0)
	if r := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "h.example", "a@example.com"); r.Result != Pass {
		t.Errorf("lookalike: %+v, want pass", r)
	}
	if r := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.99"), "h.example", "a@example.com"); r.Result != Fail {
		t.Errorf("lookalike: %+v, want fail (the top domain's own A must not match)", r)
	}
	if n := srv.Queries("_0._postgate-spf.invalid", dns.TypeA); n != 2 { // one per check, no cache
		t.Errorf("%d A queries for the lookalike name, want 2", n)
	}
}

// A repeated decision with a warm cache sends no DNS query at all.
func TestWarmCacheNoQueries(t *testing.T) {
	srv := dnstest.NewServer(t, cachedZone)
	c := newChecker(t, srv, 0, 0)
	ctx := context.Background()
	run := func() []Result {
		var out []Result
		for _, ip := range []string{"198.51.100.7", "192.0.2.10", "203.0.113.9"} {
			a := netip.MustParseAddr(ip)
			out = append(out,
				c.CheckHelo(ctx, a, "other.example"),
				c.CheckMailFrom(ctx, a, "other.example", "someone@example.com"),
				c.CheckMailFrom(ctx, a, "other.example", "someone@nothing.example.com"))
		}
		return out
	}
	first := run()
	if srv.Queries(dnstest.AllNames, 0) == 0 {
		t.Fatal("no queries on a cold cache")
	}
	srv.ResetLog()
	second := run()
	if n := srv.Queries(dnstest.AllNames, 0); n != 0 {
		t.Errorf("%d queries with a warm cache, want 0: %v", n, srv.Log())
	}
	for i := range first {
		if first[i] != second[i] {
			t.Errorf("check %d: %+v then %+v", i, first[i], second[i])
		}
	}
}
