package rbl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/dnstest"
	"postgate/internal/resolver"
	"postgate/internal/syncbuf"
)

// syncBuffer collects log output, with a line counter.
type syncBuffer struct{ syncbuf.Buffer }

// count returns how many log lines contain every one of subs.
func (s *syncBuffer) count(subs ...string) int {
	n := 0
	for line := range strings.SplitSeq(s.String(), "\n") {
		all := line != ""
		for _, sub := range subs {
			all = all && strings.Contains(line, sub)
		}
		if all {
			n++
		}
	}
	return n
}

// fakeClock is an injected clock for the once-per-interval warnings.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	srv   *dnstest.Server
	res   *resolver.DNS
	c     *Checker
	log   *syncBuffer
	reg   *prometheus.Registry
	clock *fakeClock
}

// newEnv starts a test DNS server with zone and a Checker for entries
// through the real resolver. opts may adjust the Checker's options.
func newEnv(t testing.TB, zone dnstest.Zone, entries []string, opts ...func(*Options)) *env {
	t.Helper()
	e := &env{
		srv:   dnstest.NewServer(t, zone),
		log:   &syncBuffer{},
		reg:   prometheus.NewRegistry(),
		clock: &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	var err error
	e.res, err = resolver.New(resolver.Options{Servers: []string{e.srv.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lists, err := ParseLists(entries)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Lists:      lists,
		Resolver:   e.res,
		Timeout:    3 * time.Second,
		Logger:     slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: e.reg,
		Now:        e.clock.Now,
	}
	for _, f := range opts {
		f(&o)
	}
	if e.c, err = New(o); err != nil {
		t.Fatal(err)
	}
	return e
}

// counter reads a counter from the registry by its exported name and
// label values (zone, then kind), so the tests check the names the
// daemon exports.
func (e *env) counter(name string, values ...string) float64 {
	fams, err := e.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i, key := range []string{"zone", "kind"}[:len(values)] {
				if labels[key] != values[i] {
					continue metric
				}
			}
			if len(labels) != len(values) {
				continue
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// series counts the series of one metric.
func (e *env) series(name string) int {
	fams, err := e.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

func (e *env) score(q Query) Report {
	return e.c.Score(context.Background(), q)
}

func ip(s string) Query { return Query{ClientIP: netip.MustParseAddr(s)} }

func find(t *testing.T, r Report, zone string) Result {
	t.Helper()
	for _, res := range r.Results {
		if res.List.Zone == zone {
			return res
		}
	}
	t.Fatalf("no result for %s in %+v", zone, r.Results)
	return Result{}
}

func TestScoreIPv4WeightsAndFilters(t *testing.T) {
	e := newEnv(t, dnstest.Zone{
		"1.2.0.192.zen.test. A 127.0.0.4",
		"1.2.0.192.zen.test. A 127.0.0.10",
		"1.2.0.192.cop.test. A 127.0.0.2",
		"1.2.0.192.narrow.test. A 127.0.0.12",
		"1.2.0.192.wl.test. A 127.0.15.3",
	}, []string{
		"zen.test=127.0.0.[2..11]*3",
		"zen.test=127.0.0.[10;11]*-1", // same zone again: postscreen's PBL discount
		"cop.test*2",
		"narrow.test=127.0.0.[2..11]*7", // answers .12: filtered out
		"wl.test=127.0.[0..255].[1..3]*-5",
		"none.test*9", // NXDOMAIN
	})
	r := e.score(ip("192.0.2.1"))
	if r.Score != 3-1+2-5 {
		t.Errorf("score %d, want %d; %+v", r.Score, 3-1+2-5, r.Results)
	}
	if len(r.Results) != 6 {
		t.Fatalf("%d results, want one per list: %+v", len(r.Results), r.Results)
	}
	zen := r.Results[0]
	if zen.Status != Listed || zen.Weight != 3 || zen.Name != "1.2.0.192.zen.test" || zen.Subject != "192.0.2.1" ||
		len(zen.Answers) != 2 || !strings.Contains(zen.Meaning, "listed") {
		t.Errorf("zen: %+v", zen)
	}
	if r.Results[1].Status != Listed || r.Results[1].Weight != -1 {
		t.Errorf("zen PBL entry: %+v", r.Results[1])
	}
	if n := e.srv.Queries("1.2.0.192.zen.test", dns.TypeA); n != 1 {
		t.Errorf("zen.test asked %d times for two entries, want 1", n)
	}
	if n := e.srv.Queries(dnstest.AllNames, dns.TypeTXT); n != 0 {
		t.Errorf("%d TXT queries during Score, want 0", n)
	}
	if nar := find(t, r, "narrow.test"); nar.Status != NotListed || nar.Weight != 0 ||
		nar.Meaning != "answer not matched by filter 127.0.0.[2..11]" {
		t.Errorf("narrow: %+v", nar)
	}
	if none := find(t, r, "none.test"); none.Status != NotListed || none.Meaning != "no record" {
		t.Errorf("none: %+v", none)
	}
	if wl := find(t, r, "wl.test"); wl.Status != Listed || wl.Weight != -5 {
		t.Errorf("wl: %+v", wl)
	}
	if got := r.Decide(DefaultThresholds); got != WaiveGreylisting {
		t.Errorf("Decide = %v", got)
	}
	if got := e.counter("postgate_rbl_listed_total", "zen.test"); got != 2 {
		t.Errorf("listed_total{zen.test} = %v, want 2", got)
	}
	if got := e.counter("postgate_rbl_lookups_total", "zen.test"); got != 1 {
		t.Errorf("lookups_total{zen.test} = %v, want 1", got)
	}
	// Not listed anywhere.
	if r := e.score(ip("192.0.2.99")); r.Score != 0 || len(r.Hits()) != 0 || len(r.Errors()) != 0 {
		t.Errorf("clean client: %+v", r)
	}
}

func TestScoreIPv6Nibbles(t *testing.T) {
	const name = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.v6.test."
	e := newEnv(t, dnstest.Zone{name + " A 127.0.0.2"}, []string{"v6.test*4"})
	r := e.score(ip("2001:db8::1"))
	res := r.Results[0]
	if r.Score != 4 || res.Status != Listed || res.Name+"." != name || res.Subject != "2001:db8::1" {
		t.Errorf("IPv6: score %d, %+v", r.Score, res)
	}
	if n := e.srv.Queries(name, dns.TypeA); n != 1 {
		t.Errorf("%d queries for the nibble name", n)
	}
	// A v4-mapped address is queried as IPv4.
	e.srv.Add("1.2.0.192.v6.test. A 127.0.0.2")
	if r := e.score(ip("::ffff:192.0.2.1")); r.Score != 4 || r.Results[0].Name != "1.2.0.192.v6.test" {
		t.Errorf("mapped: %+v", r)
	}
}

func TestErrorCodesNeverList(t *testing.T) {
	tests := []struct {
		answer string
		kind   ErrorKind
	}{
		{"127.255.255.252", ErrUnsupported},
		{"127.255.255.254", ErrOpenResolver},
		{"127.255.255.255", ErrRateLimited},
		{"127.255.255.7", ErrListError},
		{"127.0.0.255", ErrQueryBlocked},
		{"127.0.1.255", ErrIPOnDomainList},
		{"10.0.0.2", ErrNotLoopback},
		{"192.0.2.99", ErrNotLoopback},
	}
	var zone dnstest.Zone
	var entries []string
	for i, tt := range tests {
		z := fmt.Sprintf("e%d.test", i)
		zone = append(zone, "1.2.0.192."+z+". A "+tt.answer)
		// The widest filter there is, and a huge weight: still no listing.
		entries = append(entries, z+"=[0..255].[0..255].[0..255].[0..255]*100")
	}
	// Plain entries without filter too.
	zone = append(zone, "1.2.0.192.plain.test. A 127.255.255.254", "1.2.0.192.plain.test. A 127.0.0.2")
	entries = append(entries, "plain.test*100")
	e := newEnv(t, zone, entries)
	r := e.score(ip("192.0.2.1"))
	if r.Score != 0 || r.Decide(Thresholds{Reject: 1, Allowlist: -1}) != Neutral {
		t.Fatalf("error codes scored %d: %+v", r.Score, r.Results)
	}
	for i, tt := range tests {
		z := fmt.Sprintf("e%d.test", i)
		res := find(t, r, z)
		if res.Status != ListError || res.Error != tt.kind || !strings.Contains(res.Meaning, tt.kind.Meaning()) {
			t.Errorf("%s answering %s: %+v", z, tt.answer, res)
		}
		if got := e.counter("postgate_rbl_list_errors_total", z, string(tt.kind)); got != 1 {
			t.Errorf("list_errors_total{%s,%s} = %v", z, tt.kind, got)
		}
		if e.log.count("level=WARN", "zone="+z, "kind="+string(tt.kind)) != 1 {
			t.Errorf("no WARN for %s %s in\n%s", z, tt.kind, e.log)
		}
	}
	// An error code taints the answer it came with.
	if res := find(t, r, "plain.test"); res.Status != ListError || res.Error != ErrOpenResolver || len(res.Answers) != 2 {
		t.Errorf("plain: %+v", res)
	}
	if !strings.Contains(e.log.String(), "query via public/open resolver refused by Spamhaus") {
		t.Errorf("the admin is not told about the open resolver:\n%s", e.log)
	}
	if n := len(r.Errors()); n != len(tests)+1 {
		t.Errorf("Errors() has %d results", n)
	}
}

func TestListErrorWarnsOncePerInterval(t *testing.T) {
	e := newEnv(t, dnstest.Zone{"*.zen.test. A 127.255.255.254"}, []string{"zen.test*3"},
		func(o *Options) { o.WarnInterval = time.Hour })
	for i := range 5 {
		e.score(ip(fmt.Sprintf("192.0.2.%d", i+1)))
	}
	if n := e.log.count("level=WARN", "kind=open_resolver"); n != 1 {
		t.Errorf("%d WARN lines in one interval, want 1:\n%s", n, e.log)
	}
	if n := e.log.count("level=DEBUG", "kind=open_resolver"); n != 4 {
		t.Errorf("%d DEBUG lines, want 4", n)
	}
	e.clock.Advance(time.Hour)
	e.score(ip("192.0.2.77"))
	if n := e.log.count("level=WARN", "kind=open_resolver", "since_last_warning=4"); n != 1 {
		t.Errorf("no second WARN counting the 4 quiet ones:\n%s", e.log)
	}
	if got := e.counter("postgate_rbl_list_errors_total", "zen.test", "open_resolver"); got != 6 {
		t.Errorf("counted %v, want 6", got)
	}
}

func TestDNSFailuresNeverList(t *testing.T) {
	e := newEnv(t, dnstest.Zone{
		"*.ok.test. A 127.0.0.2",
		"*.servfail.test. A 127.0.0.2",
		"*.refused.test. A 127.0.0.2",
		"*.dropped.test. A 127.0.0.2",
	}, []string{"ok.test*1", "servfail.test*5", "refused.test*5", "dropped.test*5"},
		func(o *Options) { o.Timeout = 500 * time.Millisecond })
	e.srv.Fail("1.2.0.192.servfail.test", dns.RcodeServerFailure)
	e.srv.Fail("1.2.0.192.refused.test", dns.RcodeRefused)
	e.srv.Drop("1.2.0.192.dropped.test")

	r := e.score(ip("192.0.2.1"))
	if r.Score != 1 || r.Decide(Thresholds{Reject: 1}) != Reject {
		t.Errorf("score %d: %+v", r.Score, r.Results)
	}
	if top, _ := r.TopHit(); top.List.Zone != "ok.test" {
		t.Errorf("TopHit %+v", top)
	}
	for _, z := range []string{"servfail.test", "refused.test", "dropped.test"} {
		res := find(t, r, z)
		if res.Status != LookupFailed || res.Weight != 0 {
			t.Errorf("%s: %+v", z, res)
		}
		if got := e.counter("postgate_rbl_lookup_failures_total", z); got != 1 {
			t.Errorf("lookup_failures_total{%s} = %v", z, got)
		}
		if e.log.count("level=INFO", "lookup failed", "zone="+z) != 1 {
			t.Errorf("failure of %s not logged:\n%s", z, e.log)
		}
	}
	if m := find(t, r, "dropped.test").Meaning; m != "timeout" {
		t.Errorf("dropped: %q", m)
	}
	// The exported counter is registered under its documented name.
	if n := e.series("postgate_rbl_lookup_failures_total"); n != 3 {
		t.Errorf("gathered %d failure series, want 3", n)
	}
}

func TestFailingListWarns(t *testing.T) {
	e := newEnv(t, nil, []string{"dead.test*5"}, func(o *Options) {
		o.FailureThreshold = 3
		o.WarnInterval = 10 * time.Minute
	})
	e.srv.Fail(dnstest.AllNames, dns.RcodeServerFailure)
	for i := range 2 {
		e.score(ip(fmt.Sprintf("192.0.2.%d", i+1)))
	}
	if n := e.log.count("level=WARN"); n != 0 {
		t.Fatalf("WARN before the threshold:\n%s", e.log)
	}
	for i := range 5 {
		e.score(ip(fmt.Sprintf("192.0.2.%d", i+10)))
	}
	if n := e.log.count("level=WARN", "keeps failing", "zone=dead.test"); n != 1 {
		t.Errorf("%d 'keeps failing' WARNs, want exactly 1:\n%s", n, e.log)
	}
	if e.log.count("consecutive_failures=3") != 1 {
		t.Errorf("first WARN not at the third failure:\n%s", e.log)
	}
	e.clock.Advance(10 * time.Minute)
	e.score(ip("192.0.2.50"))
	if n := e.log.count("level=WARN", "keeps failing"); n != 2 {
		t.Errorf("%d WARNs after the interval, want 2", n)
	}
	e.srv.Clear(dnstest.AllNames)
	if r := e.score(ip("192.0.2.51")); r.Results[0].Status != NotListed {
		t.Errorf("after recovery: %+v", r.Results[0])
	}
	if e.log.count("level=INFO", "answers again", "failed_lookups=8") != 1 {
		t.Errorf("no recovery line:\n%s", e.log)
	}
}

func TestParallelUnderOneDeadline(t *testing.T) {
	// Four lists each slower than a quarter of the deadline: sequential
	// lookups would overrun it, parallel ones all answer.
	e := newEnv(t, dnstest.Zone{
		"*.a.test. A 127.0.0.2", "*.b.test. A 127.0.0.2", "*.c.test. A 127.0.0.2", "*.d.test. A 127.0.0.2",
	}, []string{"a.test", "b.test", "c.test", "d.test"}, func(o *Options) { o.Timeout = 1500 * time.Millisecond })
	e.srv.Delay(dnstest.AllNames, 500*time.Millisecond)
	if r := e.score(ip("192.0.2.1")); r.Score != 4 {
		t.Errorf("score %d: %+v", r.Score, r.Results)
	}
}

func TestCancelledCallerIsNotAListFailure(t *testing.T) {
	e := newEnv(t, dnstest.Zone{"*.a.test. A 127.0.0.2"}, []string{"a.test"})
	e.srv.Drop(dnstest.AllNames)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := e.c.Score(ctx, ip("192.0.2.1"))
	if r.Score != 0 || r.Results[0].Status != LookupFailed || !strings.HasPrefix(r.Results[0].Meaning, "cancelled") {
		t.Errorf("%+v", r.Results[0])
	}
	if got := e.counter("postgate_rbl_lookup_failures_total", "a.test"); got != 0 {
		t.Errorf("a cancelled caller counted as a list failure")
	}
}

func TestDomainLists(t *testing.T) {
	e := newEnv(t, dnstest.Zone{
		"spam.example.dbl.test. A 127.0.1.2",
		"bad-helo.example.dbl.test. A 127.0.1.2",
		"host.spam.example.cn.test. A 127.0.0.2",
		"spam.example.dbl.test. TXT \"listed domain\"",
	}, []string{
		"sender,helo:dbl.test=127.0.1.[2..99]*3",
		"client_name:cn.test*2",
		"ip:dbl.test*50", // an IP list on the same zone: asked for the IP only
	})
	r := e.score(Query{
		ClientIP:     netip.MustParseAddr("192.0.2.1"),
		SenderDomain: "Spam.Example.",
		Helo:         "spam.example",
		ClientName:   "host.spam.example",
	})
	if r.Score != 3+2 {
		t.Errorf("score %d: %+v", r.Score, r.Results)
	}
	dbl := r.Results[0]
	if dbl.Targets != TargetSender|TargetHelo || dbl.Subject != "spam.example" || dbl.Name != "spam.example.dbl.test" || dbl.Weight != 3 {
		t.Errorf("dbl: %+v", dbl)
	}
	if len(r.Results) != 3 {
		t.Errorf("sender and helo alike should make one result: %+v", r.Results)
	}
	if n := e.srv.Queries("spam.example.dbl.test", dns.TypeA); n != 1 {
		t.Errorf("%d queries for the shared name", n)
	}
	if n := e.srv.Queries("host.spam.example.dbl.test", dns.TypeA); n != 0 {
		t.Errorf("dbl asked for the client name it is not configured for")
	}
	if cn := r.Results[1]; cn.Status != Listed || cn.Targets != TargetClientName {
		t.Errorf("cn: %+v", cn)
	}

	// Sender and HELO listed under different names: one entry, one weight.
	r = e.score(Query{SenderDomain: "spam.example", Helo: "bad-helo.example", ClientName: "unknown"})
	hits := r.Hits()
	if r.Score != 3 || len(hits) != 2 || hits[0].Weight != 3 || hits[1].Weight != 0 {
		t.Errorf("entry counted more than once: score %d, hits %+v", r.Score, hits)
	}
	if res := find(t, r, "cn.test"); res.Status != Skipped {
		t.Errorf("client name 'unknown' queried: %+v", res)
	}
	var b strings.Builder
	_ = FormatReport(&b, r, DefaultThresholds)
	if !strings.Contains(b.String(), "(entry already counted)") {
		t.Errorf("report:\n%s", b.String())
	}

	// HELO address literal and single label: nothing to ask.
	r = e.score(Query{Helo: "[192.0.2.1]", SenderDomain: "localhost"})
	for _, res := range r.Results {
		if res.Status != Skipped {
			t.Errorf("%+v", res)
		}
	}
}

func TestReasonFetchedOnlyOnReject(t *testing.T) {
	e := newEnv(t, dnstest.Zone{
		"1.2.0.192.zen.test. A 127.0.0.2",
		`1.2.0.192.zen.test. TXT "https://example.test/query/ip/192.0.2.1"`,
		"1.2.0.192.wl.test. A 127.0.0.2",
		`1.2.0.192.wl.test. TXT "allowlisted"`,
	}, []string{"zen.test*3", "wl.test*-1"})
	r := e.score(ip("192.0.2.1"))
	if n := e.srv.Queries(dnstest.AllNames, dns.TypeTXT); n != 0 {
		t.Fatalf("Score fetched %d TXT records", n)
	}
	if r.Decide(Thresholds{Reject: 2}) != Reject {
		t.Fatalf("no reject: %+v", r)
	}
	hit, ok := r.TopHit()
	if !ok {
		t.Fatal("no top hit")
	}
	text := RejectText(hit, e.c.Reason(context.Background(), hit))
	want := "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.test; https://example.test/query/ip/192.0.2.1"
	if text != want {
		t.Errorf("got  %q\nwant %q", text, want)
	}
	if n := e.srv.Queries("1.2.0.192.zen.test", dns.TypeTXT); n != 1 {
		t.Errorf("%d TXT queries for the hit", n)
	}
	if n := e.srv.Queries("1.2.0.192.wl.test", dns.TypeTXT); n != 0 {
		t.Errorf("TXT of a list that is not the reject reason was fetched")
	}
	// No TXT record: the reply has no reason part.
	e.srv.Remove("1.2.0.192.zen.test", dns.TypeTXT)
	if got := e.c.Reason(context.Background(), hit); got != "" {
		t.Errorf("Reason = %q", got)
	}
	// Not listed: nothing to ask.
	if got := e.c.Reason(context.Background(), Result{List: hit.List, Status: NotListed, Subject: "192.0.2.1", Targets: TargetIP}); got != "" {
		t.Errorf("Reason of a non-hit = %q", got)
	}
	if n := e.srv.Queries(dnstest.AllNames, dns.TypeTXT); n != 2 {
		t.Errorf("%d TXT queries in all, want 2", n)
	}
}

func TestDQSKeyNeverShown(t *testing.T) {
	const key = "abcdefghij0123456789klmnop"
	e := newEnv(t, dnstest.Zone{
		"1.2.0.192." + key + ".zen.dq.spamhaus.net. A 127.0.0.4",
		"1.2.0.192." + key + ".zen.dq.spamhaus.net. TXT \"see https://check.spamhaus.org/ ref " + key + "\"",
		"2.2.0.192." + key + ".zen.dq.spamhaus.net. A 127.255.255.254",
	}, []string{"zen.dq.spamhaus.net=127.0.0.[2..11]*3", "dbl.dq.spamhaus.net=127.0.1.[2..99]"},
		func(o *Options) { o.DQSKey = Secret(strings.ToUpper(key)) })
	// A disabled key: Spamhaus refuses the DBL queries.
	e.srv.Fail("1.2.0.192."+key+".dbl.dq.spamhaus.net", dns.RcodeRefused)

	r := e.score(ip("192.0.2.1"))
	hit := r.Results[0]
	if r.Score != 3 || hit.Name != "1.2.0.192.<DQS-key>.zen.dq.spamhaus.net" || hit.List.Zone != "zen.dq.spamhaus.net" {
		t.Errorf("DQS: score %d, %+v", r.Score, hit)
	}
	if n := e.srv.Queries("1.2.0.192."+key+".zen.dq.spamhaus.net", dns.TypeA); n != 1 {
		t.Errorf("key not put in the query name (%d queries): %+v", n, e.srv.Log())
	}
	if res := r.Results[1]; res.Status != LookupFailed || !strings.Contains(res.Meaning, "DQS key") {
		t.Errorf("refused DQS: %+v", res)
	}
	reason := e.c.Reason(context.Background(), hit)
	r2 := e.score(ip("192.0.2.2"))
	var out bytes.Buffer
	_ = FormatReport(&out, r, DefaultThresholds)
	_ = FormatReport(&out, r2, DefaultThresholds)
	fmt.Fprintf(&out, "%v %+v %#v %s\n", r, r2, r, RejectText(hit, reason))
	slog.New(slog.NewTextHandler(&out, nil)).Info("opts", "key", Secret(key), "opts", Options{DQSKey: Secret(key)})
	fmt.Fprintf(&out, "%v %+v %#v\n", Options{DQSKey: Secret(key)}, Options{DQSKey: Secret(key)}, Options{DQSKey: Secret(key)})
	gathered, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&out, "%v", gathered)
	for name, text := range map[string]string{"logs": e.log.String(), "reports, replies, metrics": out.String()} {
		if strings.Contains(strings.ToLower(text), key) {
			t.Errorf("the DQS key appears in the %s:\n%s", name, text)
		}
	}
	if !strings.Contains(reason, "ref <DQS-key>") {
		t.Errorf("reason %q", reason)
	}
	if r2.Results[0].Status != ListError || e.log.count("level=WARN", "open_resolver", "name=2.2.0.192.<DQS-key>.zen.dq.spamhaus.net") != 1 {
		t.Errorf("DQS error code: %+v\n%s", r2.Results[0], e.log)
	}
}

func TestNewErrors(t *testing.T) {
	res, err := resolver.New(resolver.Options{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	dq := mustParse(t, "zen.dq.spamhaus.net")
	for name, o := range map[string]Options{
		"no resolver":  {Lists: []List{mustParse(t, "a.test")}},
		"DQS, no key":  {Lists: []List{dq}, Resolver: res},
		"key with dot": {Lists: []List{dq}, Resolver: res, DQSKey: "abc.def"},
		"unparsed":     {Lists: []List{{Zone: "a.test"}}, Resolver: res},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.Contains(err.Error(), "abc") {
			t.Errorf("%s: error shows the key: %v", name, err)
		}
	}
	// Two Checkers on one registry (a reload) share the counters.
	reg := prometheus.NewRegistry()
	for range 2 {
		if _, err := New(Options{Lists: []List{dq}, Resolver: res, DQSKey: "k1", Registerer: reg}); err != nil {
			t.Fatal(err)
		}
	}
	// No lists: a Checker that never asks anything.
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Score(context.Background(), ip("192.0.2.1")); r.Score != 0 || len(r.Results) != 0 {
		t.Errorf("%+v", r)
	}
}

func TestFormatReportFromScore(t *testing.T) {
	e := newEnv(t, dnstest.Zone{
		"1.2.0.192.zen.test. A 127.0.0.4",
		"1.2.0.192.err.test. A 127.255.255.254",
	}, []string{"zen.test=127.0.0.[2..11]*3", "err.test*2", "none.test", "domain:dbl.test"})
	e.srv.Fail("1.2.0.192.none.test", dns.RcodeServerFailure)
	q, err := ParseQuery("192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := FormatReport(&b, e.score(q), DefaultThresholds); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"1.2.0.192.zen.test", "127.0.0.4", "listed", "+3",
		"127.255.255.254", "list error: 127.255.255.254: query via public/open resolver refused by Spamhaus",
		"lookup failed: server misbehaving: SERVFAIL",
		"domain:dbl.test", "skipped: nothing to query",
		"score 3: reject (score 3 >= reject_score 3)", "checking client_ip=192.0.2.1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
