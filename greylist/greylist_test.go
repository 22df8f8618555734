package greylist

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

var mail = Input{
	ClientIP:   netip.MustParseAddr("192.0.2.10"),
	ClientName: "mx1.sender.example",
	Sender:     "alice@sender.example",
	Recipient:  "bob@rcpt.example",
}

type step struct {
	advance time.Duration
	action  Action
	reason  string
	wait    time.Duration
	delayed time.Duration
	writes  int64 // store writes this step must cause
}

func TestStateMachine(t *testing.T) {
	const day = 24 * time.Hour
	scenarios := []struct {
		name  string
		steps []step
	}{
		{"greylisted then passed then known", []step{
			{0, Defer, ReasonNew, 5 * time.Minute, 0, 1},
			{time.Minute, Defer, ReasonEarlyRetry, 4 * time.Minute, 0, 0},
			{3*time.Minute + 59*time.Second, Defer, ReasonEarlyRetry, time.Second, 0, 0},
			{time.Second, Pass, ReasonPassed, 0, 5 * time.Minute, 1},      // exactly Delay after first
			{time.Second, Pass, ReasonKnown, 0, 0, 0},                     // no X-Greylist twice, no write
			{59*time.Minute + 58*time.Second, Pass, ReasonKnown, 0, 0, 0}, // last seen 59m59s ago: no write
			{time.Second, Pass, ReasonKnown, 0, 0, 1},                     // 1h: last seen refreshed
			{30 * time.Minute, Pass, ReasonKnown, 0, 0, 0},
		}},
		{"retry after the window starts over", []step{
			{0, Defer, ReasonNew, 5 * time.Minute, 0, 1},
			{48*time.Hour + time.Second, Defer, ReasonRetryWindowExpired, 5 * time.Minute, 0, 1},
			{4 * time.Minute, Defer, ReasonEarlyRetry, time.Minute, 0, 0},
			{time.Minute, Pass, ReasonPassed, 0, 5 * time.Minute, 1},
		}},
		{"retry at the end of the window passes", []step{
			{0, Defer, ReasonNew, 5 * time.Minute, 0, 1},
			{48 * time.Hour, Pass, ReasonPassed, 0, 48 * time.Hour, 1},
		}},
		{"passed triplet unseen for MaxAge starts over", []step{
			{0, Defer, ReasonNew, 5 * time.Minute, 0, 1},
			{10 * time.Minute, Pass, ReasonPassed, 0, 10 * time.Minute, 1},
			{35 * day, Pass, ReasonKnown, 0, 0, 1}, // exactly MaxAge: still known, refreshed
			{35 * day, Pass, ReasonKnown, 0, 0, 1},
			{35*day + time.Second, Defer, ReasonMaxAgeExpired, 5 * time.Minute, 0, 1},
			{5 * time.Minute, Pass, ReasonPassed, 0, 5 * time.Minute, 1},
		}},
		{"clock going back restarts the delay", []step{
			{0, Defer, ReasonNew, 5 * time.Minute, 0, 1},
			{-time.Hour, Defer, ReasonEarlyRetry, 5 * time.Minute, 0, 1},
			{5 * time.Minute, Pass, ReasonPassed, 0, 5 * time.Minute, 1},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			clock := newClock()
			store := &countingStore{Store: openTestBolt(t, "")}
			g := New(store, testConfig(), nil, clock.Now)
			for i, st := range sc.steps {
				clock.Advance(st.advance)
				before := store.writes.Load()
				v, err := g.Check(context.Background(), mail)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				want := Verdict{Action: st.action, Reason: st.reason, Wait: st.wait, Delayed: st.delayed}
				if v != want {
					t.Errorf("step %d: got %+v, want %+v", i, v, want)
				}
				if w := store.writes.Load() - before; w != st.writes {
					t.Errorf("step %d (%s): %d writes, want %d", i, v.Reason, w, st.writes)
				}
			}
		})
	}
}

func TestTripletKey(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	g := New(openTestBolt(t, ""), testConfig(), nil, clock.Now)
	if _, err := g.Check(ctx, mail); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	// The same triplet, written differently: same network, normalised sender,
	// recipient in another case.
	same := []Input{
		{ClientIP: netip.MustParseAddr("192.0.2.200"), Sender: "Alice+news@Sender.Example", Recipient: "BOB@rcpt.example"},
		{ClientIP: netip.MustParseAddr("::ffff:192.0.2.11"), Sender: "prvs=0123abcdef=alice@sender.example", Recipient: "bob@rcpt.example"},
		{ClientIP: netip.MustParseAddr("192.0.2.12"), Sender: "SRS0=xx=YY=sender.example=alice@forwarder.example", Recipient: "bob@rcpt.example"},
	}
	for _, in := range same {
		if v, err := g.Check(ctx, in); err != nil || v.Reason != ReasonEarlyRetry {
			t.Errorf("%+v: got %+v, %v; want early-retry (same triplet)", in, v, err)
		}
	}
	other := []Input{
		{ClientIP: netip.MustParseAddr("192.0.3.10"), Sender: mail.Sender, Recipient: mail.Recipient},
		{ClientIP: mail.ClientIP, Sender: "", Recipient: mail.Recipient},
		{ClientIP: mail.ClientIP, Sender: mail.Sender, Recipient: "carol@rcpt.example"},
		{ClientIP: mail.ClientIP, Sender: mail.Sender, Recipient: mail.Recipient, Origin: "sender.example"},
	}
	for _, in := range other {
		if v, err := g.Check(ctx, in); err != nil || v.Reason != ReasonNew {
			t.Errorf("%+v: got %+v, %v; want new (other triplet)", in, v, err)
		}
	}
	// Origin replaces the network: a pool retrying from anywhere is the same triplet.
	pool := Input{ClientIP: netip.MustParseAddr("198.51.100.1"), Sender: mail.Sender, Recipient: mail.Recipient, Origin: "Sender.Example"}
	if v, err := g.Check(ctx, pool); err != nil || v.Reason != ReasonEarlyRetry {
		t.Errorf("origin from another IP: got %+v, %v; want early-retry", v, err)
	}
	// The null sender is its own sender.
	null := Input{ClientIP: netip.MustParseAddr("192.0.2.99"), Sender: "", Recipient: mail.Recipient}
	if v, err := g.Check(ctx, null); err != nil || v.Reason != ReasonEarlyRetry {
		t.Errorf("null sender again: got %+v, %v; want early-retry", v, err)
	}
	entries, err := g.ListTriplets(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.Key)
	}
	want := "192.0.2.0//bob@rcpt.example 192.0.2.0/alice@sender.example/bob@rcpt.example " +
		"192.0.2.0/alice@sender.example/carol@rcpt.example 192.0.3.0/alice@sender.example/bob@rcpt.example " +
		"sender.example/alice@sender.example/bob@rcpt.example"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("keys:\n%s\nwant\n%s", got, want)
	}
	if _, err := g.Check(ctx, Input{Sender: "a@b", Recipient: "c@d"}); !errors.Is(err, ErrNoClient) {
		t.Errorf("no client: %v", err)
	}
}

func TestIPv6Prefix(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig()
	cfg.IPv6Prefix = 64
	g := New(openTestBolt(t, ""), cfg, nil, newClock().Now)
	in := Input{ClientIP: netip.MustParseAddr("2001:db8:1:2::25"), Sender: "a@b.example", Recipient: "c@d.example"}
	if v, _ := g.Check(ctx, in); v.Reason != ReasonNew {
		t.Fatalf("got %+v", v)
	}
	in.ClientIP = netip.MustParseAddr("2001:db8:1:2:ffff::1")
	if v, _ := g.Check(ctx, in); v.Reason != ReasonEarlyRetry {
		t.Errorf("same /64: got %+v", v)
	}
	in.ClientIP = netip.MustParseAddr("2001:db8:1:3::25")
	if v, _ := g.Check(ctx, in); v.Reason != ReasonNew {
		t.Errorf("other /64: got %+v", v)
	}
}

func TestWhitelistsInCheck(t *testing.T) {
	ctx := context.Background()
	wl, err := LoadWhitelist([]string{debianClients}, []string{debianRecipients})
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: openTestBolt(t, "")}
	g := New(store, testConfig(), wl, newClock().Now)
	cases := []struct {
		in     Input
		reason string
	}{
		{Input{ClientIP: netip.MustParseAddr("203.0.113.9"), ClientName: "mail-ed1-f41.google.com", Sender: "a@gmail.com", Recipient: "u@example.org"}, ReasonWhitelistClient},
		{Input{ClientIP: netip.MustParseAddr("51.4.72.9"), ClientName: "unknown", Sender: "a@b.example", Recipient: "u@example.org"}, ReasonWhitelistClient},
		{Input{ClientIP: netip.MustParseAddr("203.0.113.9"), ClientName: "unknown", Sender: "a@b.example", Recipient: "postmaster@example.org"}, ReasonWhitelistRecipient},
	}
	for _, c := range cases {
		v, err := g.Check(ctx, c.in)
		if err != nil || v.Action != Pass || v.Reason != c.reason {
			t.Errorf("%+v: got %+v, %v; want pass %s", c.in, v, err, c.reason)
		}
	}
	if n := store.writes.Load(); n != 0 {
		t.Errorf("whitelisted mail caused %d writes", n)
	}
	g.SetWhitelist(nil)
	if v, _ := g.Check(ctx, cases[0].in); v.Reason != ReasonNew {
		t.Errorf("after SetWhitelist(nil): %+v", v)
	}
}

// passTriplet greylists a new triplet of ip and passes it after the delay.
func passTriplet(t *testing.T, g *Greylister, clock *fakeClock, ip string, n int) {
	t.Helper()
	in := Input{ClientIP: netip.MustParseAddr(ip), Sender: fmt.Sprintf("s%d@x.example", n), Recipient: fmt.Sprintf("r%d@y.example", n)}
	v, err := g.Check(context.Background(), in)
	if err != nil || v.Reason != ReasonNew {
		t.Fatalf("triplet %d: got %+v, %v; want new", n, v, err)
	}
	clock.Advance(5 * time.Minute)
	v, err = g.Check(context.Background(), in)
	if err != nil || v.Reason != ReasonPassed {
		t.Fatalf("triplet %d: got %+v, %v; want passed", n, v, err)
	}
}

func awlCount(t *testing.T, g *Greylister, ip string) int {
	t.Helper()
	entries, err := g.ListClients(context.Background(), ListOptions{Prefix: ip, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].Client != ip {
		return 0
	}
	return entries[0].Count
}

func TestAutoWhitelist(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 3
	store := &countingStore{Store: openTestBolt(t, "")}
	g := New(store, cfg, nil, clock.Now)
	const ip = "192.0.2.10"

	passTriplet(t, g, clock, ip, 1)
	if c := awlCount(t, g, ip); c != 1 {
		t.Fatalf("count after first pass: %d", c)
	}
	passTriplet(t, g, clock, ip, 2) // same hour: not counted
	if c := awlCount(t, g, ip); c != 1 {
		t.Fatalf("count after second pass within the hour: %d", c)
	}
	clock.Advance(time.Hour)
	passTriplet(t, g, clock, ip, 3)
	clock.Advance(time.Hour)
	if v, _ := g.Check(ctx, Input{ClientIP: netip.MustParseAddr(ip), Sender: "new@x.example", Recipient: "r@y.example"}); v.Reason != ReasonNew {
		t.Fatalf("count 2 < 3: got %+v", v)
	}
	passTriplet(t, g, clock, ip, 4)
	if c := awlCount(t, g, ip); c != 3 {
		t.Fatalf("count: %d, want 3", c)
	}
	fresh := Input{ClientIP: netip.MustParseAddr(ip), Sender: "other@z.example", Recipient: "r@y.example"}
	if v, _ := g.Check(ctx, fresh); v != (Verdict{Action: Pass, Reason: ReasonAWL}) {
		t.Fatalf("whitelisted client: got %+v", v)
	}
	// Keyed by the full address, not the /24.
	neighbour := fresh
	neighbour.ClientIP = netip.MustParseAddr("192.0.2.11")
	if v, _ := g.Check(ctx, neighbour); v.Reason != ReasonNew {
		t.Errorf("neighbour address: got %+v", v)
	}
	// Passing AWL'd mail writes at most once an hour.
	before := store.writes.Load()
	for range 10 {
		clock.Advance(time.Minute)
		if v, _ := g.Check(ctx, fresh); v.Reason != ReasonAWL {
			t.Fatalf("got %+v", v)
		}
	}
	if w := store.writes.Load() - before; w != 0 {
		t.Errorf("%d writes within the hour", w)
	}
	// Seen regularly: stays whitelisted beyond MaxAge.
	for range 3 {
		clock.Advance(20 * 24 * time.Hour)
		if v, _ := g.Check(ctx, fresh); v.Reason != ReasonAWL {
			t.Fatalf("refreshed client: got %+v", v)
		}
	}
	// Unseen for MaxAge: greylisted again, and counting starts over.
	clock.Advance(35*24*time.Hour + time.Second)
	if v, _ := g.Check(ctx, fresh); v.Action != Defer {
		t.Fatalf("expired AWL client: got %+v, want greylisted", v)
	}
	passTriplet(t, g, clock, ip, 5)
	if c := awlCount(t, g, ip); c != 1 {
		t.Errorf("count after expiry and a pass: %d, want 1", c)
	}

	// Manual whitelisting puts the client at the threshold.
	other := netip.MustParseAddr("198.51.100.20")
	if err := g.WhitelistClient(ctx, other); err != nil {
		t.Fatal(err)
	}
	if v, _ := g.Check(ctx, Input{ClientIP: other, Sender: "a@b.example", Recipient: "c@d.example"}); v.Reason != ReasonAWL {
		t.Errorf("manually whitelisted: got %+v", v)
	}
	if found, err := g.DeleteClient(ctx, other); !found || err != nil {
		t.Errorf("DeleteClient: %v, %v", found, err)
	}
	if v, _ := g.Check(ctx, Input{ClientIP: other, Sender: "a@b.example", Recipient: "c@d.example"}); v.Reason != ReasonNew {
		t.Errorf("after DeleteClient: got %+v", v)
	}
}

func TestPrivacy(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.Privacy = true
	cfg.AutoWhitelistAfter = 1
	store := openTestBolt(t, "")
	g := New(store, cfg, nil, clock.Now)
	passTriplet(t, g, clock, "192.0.2.10", 1)

	wantTriplet := sha256.Sum256([]byte("192.0.2.0/s1@x.example/r1@y.example"))
	wantClient := sha256.Sum256([]byte("192.0.2.10"))
	for b, want := range map[Bucket][]byte{Triplets: wantTriplet[:], Clients: wantClient[:]} {
		var keys [][]byte
		err := store.Scan(ctx, b, nil, func(k, v []byte) bool {
			keys = append(keys, append([]byte(nil), k...))
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || string(keys[0]) != string(want) {
			t.Errorf("%s keys %x, want only %x", b, keys, want)
		}
	}
	// Same decisions as without privacy.
	if v, _ := g.Check(ctx, Input{ClientIP: netip.MustParseAddr("192.0.2.10"), Sender: "q@x.example", Recipient: "r@y.example"}); v.Reason != ReasonAWL {
		t.Errorf("AWL in privacy mode: %+v", v)
	}
	entries, err := g.ListTriplets(ctx, ListOptions{})
	if err != nil || len(entries) != 1 || entries[0].Network != "" || len(entries[0].Key) != 64 || !entries[0].Passed {
		t.Errorf("ListTriplets in privacy mode: %+v, %v", entries, err)
	}
	if _, err := g.DeleteTriplets(ctx, TripletFilter{Network: "192.0.2.10"}); !errors.Is(err, ErrPrivacy) {
		t.Errorf("DeleteTriplets in privacy mode: %v", err)
	}
	found, err := g.DeleteTriplet(ctx, Input{ClientIP: netip.MustParseAddr("192.0.2.99"), Sender: "s1@x.example", Recipient: "r1@y.example"})
	if !found || err != nil {
		t.Errorf("DeleteTriplet in privacy mode: %v, %v", found, err)
	}
}

func TestConcurrentChecks(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 5
	g := New(openTestBolt(t, ""), cfg, nil, clock.Now)

	run := func(n int, in func(i int) Input) map[string]int {
		var mu sync.Mutex
		reasons := map[string]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				v, err := g.Check(ctx, in(i))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					reasons["error: "+err.Error()]++
					return
				}
				reasons[v.Reason]++
			})
		}
		wg.Wait()
		return reasons
	}
	same := func(int) Input { return mail }
	if got := run(32, same); got[ReasonNew] != 1 || got[ReasonEarlyRetry] != 31 {
		t.Errorf("32 concurrent first attempts: %v, want 1 new and 31 early-retry", got)
	}
	clock.Advance(5 * time.Minute)
	if got := run(32, same); got[ReasonPassed] != 1 || got[ReasonKnown] != 31 {
		t.Errorf("32 concurrent retries: %v, want 1 passed and 31 known", got)
	}
	if c := awlCount(t, g, mail.ClientIP.String()); c != 1 {
		t.Errorf("AWL count %d after one passed triplet, want 1", c)
	}
	distinct := func(i int) Input {
		return Input{ClientIP: netip.AddrFrom4([4]byte{198, 51, byte(i % 7), byte(i)}), Sender: fmt.Sprintf("s%d@x.example", i), Recipient: "r@y.example"}
	}
	if got := run(400, distinct); got[ReasonNew] != 400 {
		t.Errorf("400 distinct triplets: %v", got)
	}
	st, err := g.Stats(ctx)
	if err != nil || st.Triplets != 401 || st.Pending != 400 || st.Passed != 1 {
		t.Errorf("stats %+v, %v", st, err)
	}
}
