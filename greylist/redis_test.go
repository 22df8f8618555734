package greylist

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"postgate/internal/redistest"
)

func openTestRedis(tb testing.TB, r *redistest.Server, o RedisOptions) *RedisStore {
	tb.Helper()
	o.Addrs = []string{r.Addr()}
	if o.Logger == nil {
		o.Logger = quietLogger
	}
	s, err := OpenRedis(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestRedisStoreContract(t *testing.T) {
	r := redistest.Start(t)
	testStoreContract(t, func(t *testing.T) Store {
		// A prefix of its own per store: the subtests share the server.
		return openTestRedis(t, r, RedisOptions{KeyPrefix: fmt.Sprintf("contract-%s:", t.Name())})
	}, redisScanCount)
}

// What Redis itself holds after an update, and a cancelled context, which
// the Redis store sees before sending anything.
func TestRedisUpdateEffects(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	s := openTestRedis(t, r, RedisOptions{})
	storePut(t, s, Triplets, "a", "1")
	if v, _ := r.Client().Get(ctx, "postgate:greylist:triplets:a").Result(); v != "1" {
		t.Errorf("in Redis: %q, want \"1\"", v)
	}
	if err := s.Update(ctx, Triplets, []byte("a"), func([]byte) ([]byte, bool) { return nil, true }); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Client().Exists(ctx, "postgate:greylist:triplets:a").Result(); n != 0 {
		t.Error("deleted key still in Redis")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Update(cctx, Triplets, []byte("c"), func([]byte) ([]byte, bool) { return []byte("4"), true }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Update: %v", err)
	}
}

func TestRedisBucketsAndPrefixes(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	a := openTestRedis(t, r, RedisOptions{})
	b := openTestRedis(t, r, RedisOptions{KeyPrefix: "other:"})
	storePut(t, a, Triplets, "k", "triplet")
	storePut(t, a, Clients, "k", "client")
	storePut(t, b, Triplets, "k", "other")
	if v := storeGet(t, a, Triplets, "k"); string(v) != "triplet" {
		t.Errorf("triplets: %q", v)
	}
	if v := storeGet(t, a, Clients, "k"); string(v) != "client" {
		t.Errorf("clients: %q", v)
	}
	if v := storeGet(t, b, Triplets, "k"); string(v) != "other" {
		t.Errorf("other prefix: %q", v)
	}
	if v := storeGet(t, b, Clients, "k"); v != nil {
		t.Errorf("other prefix sees the clients of the default one: %q", v)
	}
	keys, err := r.Client().Keys(ctx, "*").Result()
	slices.Sort(keys)
	want := []string{"other:triplets:k", "postgate:greylist:clients:k", "postgate:greylist:triplets:k"}
	if err != nil || !slices.Equal(keys, want) {
		t.Errorf("keys in Redis: %q, %v; want %q", keys, err, want)
	}
	var got []string
	b.Scan(ctx, Triplets, nil, func(k, v []byte) bool { got = append(got, string(k)+"="+string(v)); return true })
	if !slices.Equal(got, []string{"k=other"}) {
		t.Errorf("scan of the other prefix: %q", got)
	}
	got = nil
	a.Scan(ctx, Clients, nil, func(k, v []byte) bool { got = append(got, string(k)+"="+string(v)); return true })
	if !slices.Equal(got, []string{"k=client"}) {
		t.Errorf("scan of clients: %q", got)
	}
}

func TestRedisTTL(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 1
	s := openTestRedis(t, r, RedisOptions{TTL: cfg.KeyTTL()})
	raw := r.Client()
	clock := newClock()
	g := New(s, cfg, nil, clock.Now)
	pttl := func(b Bucket, key string) time.Duration {
		t.Helper()
		d, err := raw.PTTL(ctx, "postgate:greylist:"+b.String()+":"+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	near := func(d, want time.Duration) bool { return d > 0 && d <= want && d > want-time.Minute }

	if v, err := g.Check(ctx, mail); err != nil || v.Reason != ReasonNew {
		t.Fatalf("got %+v, %v", v, err)
	}
	key := "192.0.2.0/alice@sender.example/bob@rcpt.example"
	if d := pttl(Triplets, key); !near(d, cfg.RetryWindow) {
		t.Errorf("waiting triplet: PTTL %v, want about %v", d, cfg.RetryWindow)
	}
	clock.Advance(cfg.Delay)
	if v, err := g.Check(ctx, mail); err != nil || v.Reason != ReasonPassed {
		t.Fatalf("got %+v, %v", v, err)
	}
	if d := pttl(Triplets, key); !near(d, cfg.MaxAge) {
		t.Errorf("passed triplet: PTTL %v, want about %v", d, cfg.MaxAge)
	}
	if d := pttl(Clients, "192.0.2.10"); !near(d, cfg.MaxAge) {
		t.Errorf("AWL client: PTTL %v, want about %v", d, cfg.MaxAge)
	}

	// The default (nil TTL) is DefaultConfig's; a TTL <= 0 stores without expiry.
	def := openTestRedis(t, r, RedisOptions{KeyPrefix: "def:"})
	storePut(t, def, Clients, "c", "v")
	if d, _ := raw.PTTL(ctx, "def:clients:c").Result(); !near(d, DefaultConfig().MaxAge) {
		t.Errorf("default TTL: %v", d)
	}
	none := openTestRedis(t, r, RedisOptions{KeyPrefix: "none:", TTL: func(Bucket, []byte) time.Duration { return 0 }})
	storePut(t, none, Clients, "c", "v")
	if d, _ := raw.PTTL(ctx, "none:clients:c").Result(); d != -1 {
		t.Errorf("TTL 0: PTTL %v, want -1 (no expiry)", d)
	}
	// Redis expires a key by itself: what a sweep does with bbolt.
	short := openTestRedis(t, r, RedisOptions{KeyPrefix: "short:", TTL: func(Bucket, []byte) time.Duration { return 20 * time.Millisecond }})
	storePut(t, short, Triplets, "k", "v")
	for i := 0; storeGet(t, short, Triplets, "k") != nil; i++ {
		if i == 100 {
			t.Fatal("key with a 20ms TTL still there after 100 tries")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKeyTTL(t *testing.T) {
	cfg := Config{RetryWindow: 10 * time.Hour, MaxAge: 100 * time.Hour}
	ttl := cfg.KeyTTL()
	now := time.Now()
	cases := []struct {
		b    Bucket
		val  []byte
		want time.Duration
	}{
		{Triplets, encodeTriplet(tripletRecord{First: now, Last: now}), 10 * time.Hour},
		{Triplets, encodeTriplet(tripletRecord{First: now, Last: now, Passed: true}), 100 * time.Hour},
		{Triplets, []byte("corrupt"), 100 * time.Hour},
		{Clients, encodeClient(clientRecord{Count: 1, Last: now}), 100 * time.Hour},
	}
	for i, c := range cases {
		if got := ttl(c.b, c.val); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
	// Defaults are filled in as New does.
	if got := (Config{}).KeyTTL()(Clients, nil); got != DefaultConfig().MaxAge {
		t.Errorf("zero Config: %v", got)
	}
	if got := (Config{Delay: 72 * time.Hour, RetryWindow: time.Hour}).KeyTTL()(Triplets, cases[0].val); got != 72*time.Hour {
		t.Errorf("retry window shorter than the delay: %v", got)
	}
}

// Scan's prefix is matched literally, though Redis SCAN takes a glob.
func TestRedisScanPrefixIsLiteral(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	s := openTestRedis(t, r, RedisOptions{})
	for _, k := range []string{"k*", "k1", "k[1]", "k?"} {
		storePut(t, s, Triplets, k, "v")
	}
	for _, prefix := range []string{"k*", "k[", "k?"} {
		var got []string
		s.Scan(ctx, Triplets, []byte(prefix), func(k, v []byte) bool { got = append(got, string(k)); return true })
		want := map[string][]string{"k*": {"k*"}, "k[": {"k[1]"}, "k?": {"k?"}}[prefix]
		if !slices.Equal(got, want) {
			t.Errorf("scan with prefix %q: %q, want %q", prefix, got, want)
		}
	}
}

func TestRedisTwoHosts(t *testing.T) {
	for _, privacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("privacy=%v", privacy), func(t *testing.T) {
			ctx := context.Background()
			r := redistest.Start(t)
			clock := newClock()
			cfg := testConfig()
			cfg.AutoWhitelistAfter = 2
			cfg.Privacy = privacy
			mx1 := New(openTestRedis(t, r, RedisOptions{TTL: cfg.KeyTTL()}), cfg, nil, clock.Now)
			mx2 := New(openTestRedis(t, r, RedisOptions{TTL: cfg.KeyTTL()}), cfg, nil, clock.Now)

			check := func(g *Greylister, in Input, want string) Verdict {
				t.Helper()
				v, err := g.Check(ctx, in)
				if err != nil || v.Reason != want {
					t.Fatalf("got %+v, %v; want %s", v, err, want)
				}
				return v
			}
			check(mx1, mail, ReasonNew)
			clock.Advance(time.Minute)
			if v := check(mx2, mail, ReasonEarlyRetry); v.Wait != 4*time.Minute {
				t.Errorf("early retry on mx2: wait %v, want 4m", v.Wait)
			}
			clock.Advance(4 * time.Minute)
			if v := check(mx2, mail, ReasonPassed); v.Delayed != 5*time.Minute {
				t.Errorf("pass on mx2: delayed %v", v.Delayed)
			}
			check(mx1, mail, ReasonKnown)
			// Passes through either host count for the auto-whitelist of both: a second
			// triplet, an hour later, greylisted on mx1 and passing on mx2...
			clock.Advance(time.Hour)
			second := mail
			second.Sender = "carol@elsewhere.example"
			check(mx1, second, ReasonNew)
			clock.Advance(cfg.Delay)
			check(mx2, second, ReasonPassed)
			// ...and a third one passes at once on mx1: the client is whitelisted.
			third := mail
			third.Recipient = "dave@rcpt.example"
			check(mx1, third, ReasonAWL)

			st, err := mx1.Stats(ctx)
			if err != nil || st.Triplets != 2 || st.Passed != 2 || st.AWLClients != 1 {
				t.Errorf("stats on mx1: %+v, %v", st, err)
			}
			list, err := mx2.ListTriplets(ctx, ListOptions{})
			if err != nil || len(list) != 2 || !list[0].Passed || !list[1].Passed {
				t.Fatalf("list on mx2: %+v, %v", list, err)
			}
			if !privacy && (list[0].Sender != "alice@sender.example" || list[0].Network != "192.0.2.0" || list[1].Sender != "carol@elsewhere.example") {
				t.Errorf("list on mx2: %+v", list[0])
			}
			// A deletion through one host is seen by the other.
			if found, err := mx2.DeleteTriplet(ctx, mail); err != nil || !found {
				t.Fatalf("delete on mx2: %v, %v", found, err)
			}
			if found, err := mx1.DeleteClient(ctx, mail.ClientIP); err != nil || !found {
				t.Fatalf("delete client on mx1: %v, %v", found, err)
			}
			check(mx1, mail, ReasonNew)
			if !privacy {
				// DeleteTriplets goes through Store.Sweep.
				n, err := mx2.DeleteTriplets(ctx, TripletFilter{Recipient: "bob@rcpt.example"})
				if err != nil || n != 2 { // mail and second, both to bob
					t.Errorf("DeleteTriplets on mx2: %d, %v", n, err)
				}
				check(mx1, mail, ReasonNew)
			}
		})
	}
}

// TestRedisNoLostUpdates increments counters from many goroutines on two stores (two
// hosts): the WATCH/MULTI retries must apply every read-modify-write exactly once.
func TestRedisNoLostUpdates(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	reg := prometheus.NewRegistry()
	stores := []*RedisStore{
		openTestRedis(t, r, RedisOptions{Registerer: reg}),
		openTestRedis(t, r, RedisOptions{Registerer: reg}),
	}
	keys := [][]byte{[]byte("hot"), []byte("warm1"), []byte("warm2")}
	const workers, each = 8, 30 // per store
	var calls atomic.Int64
	var applied [3]atomic.Uint64 // per key, the updates that returned success
	var gaveUp atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for _, s := range stores {
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					// Half of the updates go to the one hot key.
					k := 0
					if i%2 == 1 {
						k = 1 + w%2
					}
					err := s.Update(ctx, Clients, keys[k], func(cur []byte) ([]byte, bool) {
						calls.Add(1)
						return increment(cur)
					})
					switch {
					case err == nil:
						applied[k].Add(1)
					case errors.Is(err, ErrUpdateConflict):
						// Possible when the machine is loaded; it must not apply.
						gaveUp.Add(1)
					default:
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k, key := range keys {
		v := storeGet(t, stores[k%2], Clients, string(key))
		if got, want := binary.BigEndian.Uint64(v), applied[k].Load(); got != want || want == 0 {
			t.Errorf("%s counter = %d after %d successful updates", key, got, want)
		}
	}
	conflicts := counterSum(t, reg, "postgate_greylist_redis_update_conflicts_total")
	if got := int64(conflicts) + 2*workers*each; calls.Load() < got {
		// Every conflict re-runs the UpdateFunc once.
		t.Errorf("%d UpdateFunc calls, fewer than updates + conflicts = %d", calls.Load(), got)
	}
	if e := counterSum(t, reg, "postgate_greylist_redis_errors_total"); int64(e) != gaveUp.Load() {
		t.Errorf("errors counted: %v, want %d (the updates that gave up)", e, gaveUp.Load())
	}
	if n := gaveUp.Load(); n > 0 {
		t.Logf("%d updates gave up on conflicts", n)
	}
	t.Logf("%d updates: %d UpdateFunc calls, %v conflicts retried", 2*workers*each, calls.Load(), conflicts)
}

// TestRedisOutage: Redis hung (SIGSTOP), then killed and restarted on the same port.
// Calls fail with errors instead of hanging, nothing panics, and the same store works
// again once Redis is back.
func TestRedisOutage(t *testing.T) {
	ctx := context.Background()
	r := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := openTestRedis(t, r, RedisOptions{Timeout: 100 * time.Millisecond, DialTimeout: 300 * time.Millisecond, Registerer: reg})
	clock := newClock()
	cfg := testConfig()
	cfg.AutoWhitelistAfter = 2
	g := New(s, cfg, nil, clock.Now)
	if v, err := g.Check(ctx, mail); err != nil || v.Reason != ReasonNew {
		t.Fatalf("got %+v, %v", v, err)
	}

	// failing runs calls from several goroutines and wants an error from each, within
	// a generous bound: this detects a hang, it does not measure speed.
	failing := func(phase string) {
		t.Helper()
		var wg sync.WaitGroup
		var slowest atomic.Int64
		for w := range 4 {
			wg.Go(func() {
				for i := range 5 {
					start := time.Now()
					var err error
					switch i % 3 {
					case 0:
						_, err = g.Check(ctx, Input{ClientIP: netip.AddrFrom4([4]byte{198, 51, 100, byte(w)}), Sender: "s@x.example", Recipient: fmt.Sprintf("r%d@y.example", i)})
					case 1:
						err = s.View(ctx, Triplets, []byte("k"), func([]byte) error { return nil })
					case 2:
						err = s.Update(ctx, Clients, []byte("k"), func([]byte) ([]byte, bool) { return []byte("v"), true })
					}
					d := time.Since(start)
					for old := slowest.Load(); d > time.Duration(old) && !slowest.CompareAndSwap(old, int64(d)); old = slowest.Load() {
					}
					if err == nil {
						t.Errorf("%s: call %d succeeded", phase, i)
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: calls hang", phase)
		}
		t.Logf("%s: 20 calls failed, slowest after %v", phase, time.Duration(slowest.Load()))
	}
	recovered := func(phase string) {
		t.Helper()
		var err error
		for range 100 {
			if err = s.View(ctx, Triplets, []byte("k"), func([]byte) error { return nil }); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s: store still failing: %v", phase, err)
		}
	}

	r.Signal(syscall.SIGSTOP) // hung: connections open, no answers
	failing("redis stopped")
	r.Signal(syscall.SIGCONT)
	recovered("redis continued")
	clock.Advance(cfg.Delay)
	if v, err := g.Check(ctx, mail); err != nil || v.Reason != ReasonPassed {
		t.Fatalf("after SIGCONT: %+v, %v", v, err)
	}

	r.Kill() // crash: connections reset, then refused
	failing("redis killed")
	r.Start() // same port, empty (no persistence)
	recovered("redis restarted")
	if v, err := g.Check(ctx, mail); err != nil || v.Reason != ReasonNew {
		t.Errorf("after restart (state lost with Redis): %+v, %v", v, err)
	}
	storePut(t, s, Clients, "after", "restart")
	if v := storeGet(t, s, Clients, "after"); string(v) != "restart" {
		t.Errorf("after restart: %q", v)
	}
	if e := counterSum(t, reg, "postgate_greylist_redis_errors_total"); e < 40 {
		t.Errorf("error metric counted %v failed calls, want at least 40", e)
	}
}

func TestOpenRedisErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := OpenRedis(ctx, RedisOptions{}); err == nil {
		t.Error("no address accepted")
	}
	r := redistest.Start(t, "--requirepass", "secret")
	if _, err := OpenRedis(ctx, RedisOptions{Addrs: []string{r.Addr()}, Password: "wrong", Logger: quietLogger}); err == nil {
		t.Error("wrong password accepted at open")
	}
	s, err := OpenRedis(ctx, RedisOptions{Addrs: []string{r.Addr()}, Password: "secret", DB: 3, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storePut(t, s, Triplets, "k", "v")
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: "secret", DB: 3})
	defer c.Close()
	if v, err := c.Get(ctx, "postgate:greylist:triplets:k").Result(); err != nil || v != "v" {
		t.Errorf("key in database 3: %q, %v", v, err)
	}

	// Nothing listening: the store opens, calls fail, and it works once Redis is there.
	r2 := redistest.New(t)
	late, err := OpenRedis(ctx, RedisOptions{Addrs: []string{r2.Addr()}, Logger: quietLogger})
	if err != nil {
		t.Fatalf("open with Redis down: %v", err)
	}
	defer late.Close()
	if err := late.View(ctx, Triplets, []byte("k"), func([]byte) error { return nil }); err == nil {
		t.Error("View with Redis down succeeded")
	}
	r2.Start()
	for i := 0; ; i++ {
		err := late.Update(ctx, Triplets, []byte("k"), func([]byte) ([]byte, bool) { return []byte("v"), true })
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("store opened while Redis was down still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// counterSum is the sum of the counters named name in reg (all label values).
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// Benchmarks beside the bbolt ones of bench_test.go, same load and shape.

func benchRedisGreylister(b *testing.B) (*Greylister, *RedisStore) {
	r := redistest.Start(b)
	cfg := DefaultConfig()
	cfg.Logger = quietLogger
	s := openTestRedis(b, r, RedisOptions{TTL: cfg.KeyTTL()})
	return New(s, cfg, nil, nil), s
}

// BenchmarkRedisCheckNewTriplets: every request is a new triplet, so every request is
// a write (WATCH, GET, MULTI SET EXEC after the read-only GET).
func BenchmarkRedisCheckNewTriplets(b *testing.B) {
	g, _ := benchRedisGreylister(b)
	runStoreChecks(b, 16, g, benchInput, ReasonNew)
}

// BenchmarkRedisCheckKnownTriplets: requests for 100,000 triplets that passed
// greylisting (read-only path: one GET).
func BenchmarkRedisCheckKnownTriplets(b *testing.B) {
	g, s := benchRedisGreylister(b)
	const n = 100000
	storePassedTriplets(b, g, s, n)
	runStoreChecks(b, 16, g, func(i uint64) Input { return benchInput(i % n) }, ReasonKnown)
}
