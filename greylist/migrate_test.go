package greylist

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"postgate/internal/redistest"
)

// fillGreylist puts, through g, passed triplets of nPassed clients (each counted for
// the auto-whitelist; the first ones twice, so whitelisted with AutoWhitelistAfter 2)
// and nWaiting triplets waiting for their retry. It returns the inputs of both kinds.
func fillGreylist(t *testing.T, g *Greylister, clock *fakeClock, nPassed, nWaiting int) (passed, waiting []Input) {
	t.Helper()
	ctx := context.Background()
	for i := range nPassed {
		ip := fmt.Sprintf("192.0.2.%d", i+1)
		passTriplet(t, g, clock, ip, i)
		in := Input{ClientIP: netip.MustParseAddr(ip), Sender: fmt.Sprintf("s%d@x.example", i), Recipient: fmt.Sprintf("r%d@y.example", i)}
		passed = append(passed, in)
	}
	clock.Advance(time.Hour) // a second hour: counted again
	for i := range min(nPassed, 3) {
		passTriplet(t, g, clock, fmt.Sprintf("192.0.2.%d", i+1), 1000+i)
	}
	for i := range nWaiting {
		in := Input{ClientIP: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), Sender: fmt.Sprintf("w%d@x.example", i), Recipient: "r@y.example"}
		if v, err := g.Check(ctx, in); err != nil || v.Reason != ReasonNew {
			t.Fatalf("got %+v, %v", v, err)
		}
		waiting = append(waiting, in)
	}
	return passed, waiting
}

func dumpStore(t *testing.T, s Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, b := range []Bucket{Triplets, Clients} {
		err := s.Scan(context.Background(), b, nil, func(k, v []byte) bool {
			out[b.String()+":"+string(k)] = string(v)
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestMigrateBoltToRedis(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 2

	bolt := openTestBolt(t, "")
	gb := New(bolt, cfg, nil, clock.Now)
	passed, waiting := fillGreylist(t, gb, clock, 10, 1500)
	before := dumpStore(t, bolt)
	if len(before) != 10+3+1500+10 {
		t.Fatalf("bbolt holds %d entries", len(before))
	}

	red := openTestRedis(t, r, RedisOptions{TTL: cfg.KeyTTL()})
	var calls []string
	n, err := Migrate(ctx, bolt, red, func(b Bucket, n int) { calls = append(calls, fmt.Sprintf("%s:%d", b, n)) })
	if err != nil || n != len(before) {
		t.Fatalf("Migrate: %d, %v; want %d entries", n, err, len(before))
	}
	wantCalls := []string{"triplets:512", "triplets:1024", "triplets:1513", "clients:10"}
	if !slices.Equal(calls, wantCalls) {
		t.Errorf("progress calls %q, want %q", calls, wantCalls)
	}
	after := dumpStore(t, red)
	if len(after) != len(before) {
		t.Errorf("redis holds %d entries, want %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %x in redis, %x in bbolt", k, after[k], v)
		}
	}
	// Listing is the same on both (Scan's order included).
	lb, _ := gb.ListTriplets(ctx, ListOptions{})
	gr := New(red, cfg, nil, clock.Now)
	lr, err := gr.ListTriplets(ctx, ListOptions{})
	if err != nil || !slices.Equal(lb, lr) {
		t.Errorf("listings differ: %d entries from bbolt, %d from redis, %v", len(lb), len(lr), err)
	}
	// Every key has a TTL.
	raw := r.Client()
	keys, _ := raw.Keys(ctx, "postgate:greylist:*").Result()
	for _, k := range keys {
		if d, err := raw.PTTL(ctx, k).Result(); err != nil || d <= 0 {
			t.Errorf("%s: PTTL %v, %v", k, d, err)
		}
	}
	if len(keys) != len(before) {
		t.Errorf("%d keys in redis", len(keys))
	}

	// The state works through a Greylister on Redis.
	for i, in := range passed {
		in.Sender, in.Recipient = "new@other.example", fmt.Sprintf("new%d@y.example", i)
		want := ReasonNew
		if i < 3 {
			want = ReasonAWL // counted in two hours
		}
		if v, err := gr.Check(ctx, in); err != nil || v.Reason != want {
			t.Errorf("client %s: %+v, %v; want %s", in.ClientIP, v, err, want)
		}
	}
	for _, in := range passed[3:] {
		if v, err := gr.Check(ctx, in); err != nil || v.Reason != ReasonKnown {
			t.Errorf("passed triplet %s: %+v, %v", in.Sender, v, err)
		}
	}
	if v, err := gr.Check(ctx, waiting[0]); err != nil || v.Reason != ReasonEarlyRetry {
		t.Errorf("waiting triplet: %+v, %v", v, err)
	}
	clock.Advance(cfg.Delay)
	if v, err := gr.Check(ctx, waiting[1]); err != nil || v.Reason != ReasonPassed {
		t.Errorf("waiting triplet after the delay: %+v, %v", v, err)
	}

	// Again: idempotent, and what advanced on Redis meanwhile is kept.
	changed := dumpStore(t, red)
	n, err = Migrate(ctx, bolt, red, nil)
	if err != nil || n != len(before) {
		t.Fatalf("second Migrate: %d, %v", n, err)
	}
	again := dumpStore(t, red)
	for k, v := range changed {
		if again[k] != v {
			t.Errorf("second Migrate changed %s", k)
		}
	}
	if len(again) != len(changed) {
		t.Errorf("second Migrate: %d entries, want %d", len(again), len(changed))
	}
}

// TestMigrateBoltToBolt needs no Redis: Migrate works between any stores.
func TestMigrateBoltToBolt(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 2
	from := openTestBolt(t, "")
	fillGreylist(t, New(from, cfg, nil, clock.Now), clock, 4, 20)
	to := openTestBolt(t, "")
	n, err := Migrate(ctx, from, to, nil)
	before, after := dumpStore(t, from), dumpStore(t, to)
	if err != nil || n != len(before) || len(after) != len(before) {
		t.Fatalf("Migrate: %d, %v; %d entries, want %d", n, err, len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s differs", k)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Migrate(cctx, from, openTestBolt(t, ""), nil); err == nil {
		t.Error("Migrate with a cancelled context succeeded")
	}
}

func TestMergeRecord(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	waiting := func(first int) []byte { return encodeTriplet(tripletRecord{First: at(first), Last: at(first)}) }
	passed := func(first, last int) []byte {
		return encodeTriplet(tripletRecord{First: at(first), Last: at(last), Passed: true})
	}
	client := func(n, last int) []byte { return encodeClient(clientRecord{Count: n, Last: at(last)}) }
	corrupt := []byte("x")
	cases := []struct {
		name      string
		b         Bucket
		cur, val  []byte
		want      []byte // nil: no write
		wantWrite bool
	}{
		{"absent", Triplets, nil, waiting(1), waiting(1), true},
		{"same", Triplets, waiting(1), waiting(1), nil, false},
		{"passed over waiting", Triplets, waiting(5), passed(1, 3), passed(1, 3), true},
		{"waiting under passed", Triplets, passed(1, 3), waiting(5), nil, false},
		{"later last seen", Triplets, passed(1, 3), passed(2, 9), passed(1, 9), true},
		{"earlier last seen", Triplets, passed(1, 9), passed(2, 3), nil, false},
		{"earlier first seen", Triplets, waiting(5), waiting(2), waiting(2), true},
		{"later first seen", Triplets, waiting(2), waiting(5), nil, false},
		{"over corrupt", Triplets, corrupt, waiting(1), waiting(1), true},
		{"corrupt over good", Triplets, waiting(1), corrupt, nil, false},
		{"corrupt absent", Clients, nil, corrupt, corrupt, true},
		{"higher count", Clients, client(2, 9), client(5, 3), client(5, 9), true},
		{"later client", Clients, client(5, 3), client(2, 9), client(5, 9), true},
		{"older client", Clients, client(5, 9), client(2, 3), nil, false},
	}
	for _, c := range cases {
		got, write := mergeRecord(c.b, c.cur, c.val)
		if write != c.wantWrite || !bytes.Equal(got, c.want) {
			t.Errorf("%s: got %x, %v; want %x, %v", c.name, got, write, c.want, c.wantWrite)
			continue
		}
		if write { // idempotent: merging again changes nothing
			if again, w := mergeRecord(c.b, got, c.val); w {
				t.Errorf("%s: second merge writes %x", c.name, again)
			}
		}
	}
}
