package greylist

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// Config is the greylisting policy. Zero durations and prefix lengths get the
// defaults below; start from [DefaultConfig] to get the auto-whitelist too.
type Config struct {
	Delay       time.Duration // how long a new triplet is deferred (default 5m)
	RetryWindow time.Duration // a retry must come within this, from the first attempt (default 48h)
	MaxAge      time.Duration // a passed triplet or AWL client unseen this long is forgotten (default 35 days)

	// AutoWhitelistAfter: a client IP whose triplets passed greylisting in this many
	// different hours skips greylisting. 0 disables the client auto-whitelist.
	AutoWhitelistAfter int

	IPv4Prefix, IPv6Prefix int // client network of the triplet (default 24, 64; 32/128 = address)

	// Privacy stores keys as SHA-256 hashes (postgrey --privacy): the database then
	// holds no addresses, and listing shows hashes only.
	Privacy bool

	SweepInterval time.Duration // RunSweeper's interval (default 1h)

	Logger *slog.Logger // nil = slog.Default()
}

// DefaultConfig is postgrey's defaults, auto-whitelist of clients included.
func DefaultConfig() Config {
	return Config{
		Delay:              5 * time.Minute,
		RetryWindow:        48 * time.Hour,
		MaxAge:             35 * 24 * time.Hour,
		AutoWhitelistAfter: 5,
		IPv4Prefix:         24,
		IPv6Prefix:         64,
		SweepInterval:      time.Hour,
	}
}

// Action is what to do with the mail.
type Action int

const (
	// Pass: let the mail through (greylisting has no objection).
	Pass Action = iota
	// Defer: reject it temporarily; a retry after Verdict.Wait passes.
	Defer
)

func (a Action) String() string {
	switch a {
	case Pass:
		return "pass"
	case Defer:
		return "defer"
	}
	return "unknown"
}

// Reasons in Verdict.Reason.
const (
	ReasonNew                = "new"                  // first attempt of a triplet
	ReasonEarlyRetry         = "early-retry"          // retried before the delay
	ReasonRetryWindowExpired = "retry-window-expired" // retried too late: starts over
	ReasonMaxAgeExpired      = "max-age-expired"      // passed long ago and unseen since: starts over
	ReasonPassed             = "passed"               // first retry after the delay
	ReasonKnown              = "known"                // triplet passed before
	ReasonAWL                = "awl"                  // client auto-whitelisted
	ReasonWhitelistClient    = "whitelist-client"
	ReasonWhitelistRecipient = "whitelist-recipient"
)

// Input is one recipient of one mail, independent of how it reached us.
type Input struct {
	ClientIP   netip.Addr
	ClientName string // Postfix client_name ("unknown" when FCrDNS failed)
	Sender     string // envelope sender as sent ("" = null sender)
	Recipient  string
	// Origin, when not empty, replaces the client network in the triplet key (for an
	// SPF-validated sender domain: sender pools retry from other IPs). Opaque to us;
	// it should not contain '/', or listing cannot split the key text back.
	Origin string
}

// Verdict is the result of [Greylister.Check].
type Verdict struct {
	Action  Action
	Reason  string        // one of the Reason constants
	Wait    time.Duration // Defer: time left until a retry passes
	Delayed time.Duration // set only on the first pass after the delay (X-Greylist header)
}

// Greylister decides on mails. It is safe for concurrent use.
type Greylister struct {
	store Store
	cfg   Config
	wl    atomic.Pointer[Whitelist]
	now   func() time.Time
	log   *slog.Logger
}

// New returns a Greylister keeping its state in store. wl may be nil (only postmaster@
// and abuse@ are whitelisted then); now nil means time.Now.
func New(store Store, cfg Config, wl *Whitelist, now func() time.Time) *Greylister {
	def := DefaultConfig()
	if cfg.Delay <= 0 {
		cfg.Delay = def.Delay // postgrey too turns --delay=0 into 300s
	}
	if cfg.RetryWindow <= 0 {
		cfg.RetryWindow = def.RetryWindow
	}
	if cfg.RetryWindow < cfg.Delay {
		cfg.RetryWindow = cfg.Delay
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = def.MaxAge
	}
	if cfg.AutoWhitelistAfter < 0 {
		cfg.AutoWhitelistAfter = 0
	}
	if cfg.IPv4Prefix <= 0 || cfg.IPv4Prefix > 32 {
		cfg.IPv4Prefix = def.IPv4Prefix
	}
	if cfg.IPv6Prefix <= 0 || cfg.IPv6Prefix > 128 {
		cfg.IPv6Prefix = def.IPv6Prefix
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = def.SweepInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	g := &Greylister{store: store, cfg: cfg, now: now, log: cfg.Logger}
	g.wl.Store(wl)
	return g
}

// Config returns the configuration in effect (defaults filled in).
func (g *Greylister) Config() Config { return g.cfg }

// SetWhitelist replaces the whitelist (on reload); requests in flight finish with the
// old one.
func (g *Greylister) SetWhitelist(wl *Whitelist) { g.wl.Store(wl) }

// ErrNoClient is returned by Check when the Input has neither ClientIP nor Origin.
var ErrNoClient = errors.New("greylist: no client address")

// refreshInterval bounds the writes caused by mail that passes anyway: the last-seen
// time of a passed triplet, and of an auto-whitelisted client, is rewritten only when
// the stored one is older than this. Expiry (MaxAge) is therefore up to an hour early.
const refreshInterval = time.Hour

// Check decides on one mail for one recipient. In the order postgrey uses: client
// whitelist, recipient whitelist, client auto-whitelist, triplet. A non-nil error is a
// store failure (the caller should let the mail pass).
func (g *Greylister) Check(ctx context.Context, in Input) (Verdict, error) {
	wl := g.wl.Load()
	if wl.MatchClient(in.ClientIP, in.ClientName) {
		return Verdict{Action: Pass, Reason: ReasonWhitelistClient}, nil
	}
	if wl.MatchRecipient(in.Recipient) {
		return Verdict{Action: Pass, Reason: ReasonWhitelistRecipient}, nil
	}
	if !in.ClientIP.IsValid() && in.Origin == "" {
		return Verdict{}, ErrNoClient
	}
	now := g.now()
	if g.cfg.AutoWhitelistAfter > 0 && in.ClientIP.IsValid() {
		ok, err := g.checkAWL(ctx, in.ClientIP, now)
		if err != nil {
			return Verdict{}, err
		}
		if ok {
			return Verdict{Action: Pass, Reason: ReasonAWL}, nil
		}
	}

	key := g.tripletKey(in)
	var v Verdict
	var write bool
	// Read-only path first: known triplets and early retries need no write, so they
	// never wait for a commit.
	err := g.store.View(ctx, Triplets, key, func(val []byte) error {
		v, _, write = g.decide(key, val, now)
		return nil
	})
	if err != nil {
		return Verdict{}, err
	}
	if !write {
		return v, nil
	}
	// Decide again inside the atomic update: another request may have changed the
	// record since we read it.
	err = g.store.Update(ctx, Triplets, key, func(cur []byte) ([]byte, bool) {
		var val []byte
		v, val, write = g.decide(key, cur, now)
		return val, write
	})
	if err != nil {
		return Verdict{}, err
	}
	if v.Reason == ReasonPassed && g.cfg.AutoWhitelistAfter > 0 && in.ClientIP.IsValid() {
		if err := g.countPass(ctx, in.ClientIP, now); err != nil {
			// The verdict stands, the triplet is recorded; only the AWL count is lost.
			g.log.Warn("greylist: auto-whitelist update failed", "client", in.ClientIP, "err", err)
		}
	}
	return v, nil
}

// decide is the triplet state machine: from the stored value (nil = absent) and the
// time, the verdict and the value to write (write=false: nothing to write).
func (g *Greylister) decide(key, val []byte, now time.Time) (v Verdict, newVal []byte, write bool) {
	start := func(reason string) (Verdict, []byte, bool) {
		return Verdict{Action: Defer, Reason: reason, Wait: g.cfg.Delay},
			encodeTriplet(tripletRecord{First: now, Last: now}), true
	}
	if val == nil {
		return start(ReasonNew)
	}
	rec, err := decodeTriplet(val)
	if err != nil {
		g.log.Warn("greylist: ignoring corrupt triplet record", "key", g.keyText(key), "value", val)
		return start(ReasonNew)
	}
	if rec.Passed {
		if now.Sub(rec.Last) > g.cfg.MaxAge {
			return start(ReasonMaxAgeExpired)
		}
		v = Verdict{Action: Pass, Reason: ReasonKnown}
		if now.Sub(rec.Last) >= refreshInterval || rec.Last.After(now) {
			rec.Last = now
			return v, encodeTriplet(rec), true
		}
		return v, nil, false
	}
	if rec.First.After(now) {
		// First seen in the future: the clock went back. Like postgrey, count from now.
		v = Verdict{Action: Defer, Reason: ReasonEarlyRetry, Wait: g.cfg.Delay}
		return v, encodeTriplet(tripletRecord{First: now, Last: now}), true
	}
	elapsed := now.Sub(rec.First)
	switch {
	case elapsed > g.cfg.RetryWindow:
		return start(ReasonRetryWindowExpired)
	case elapsed < g.cfg.Delay:
		// No write: the first-seen time is all that matters until the delay is over.
		return Verdict{Action: Defer, Reason: ReasonEarlyRetry, Wait: g.cfg.Delay - elapsed}, nil, false
	default:
		rec.Passed, rec.Last = true, now
		return Verdict{Action: Pass, Reason: ReasonPassed, Delayed: elapsed}, encodeTriplet(rec), true
	}
}

// checkAWL reports whether the client is auto-whitelisted, refreshing its last-seen
// time at most hourly (and counting, as postgrey does "for statistics").
func (g *Greylister) checkAWL(ctx context.Context, ip netip.Addr, now time.Time) (bool, error) {
	key := g.clientKey(ip)
	listed, stale := false, false
	err := g.store.View(ctx, Clients, key, func(val []byte) error {
		listed, stale = g.awlState(key, val, now)
		return nil
	})
	if err != nil || !listed {
		return false, err
	}
	if stale {
		err = g.store.Update(ctx, Clients, key, func(cur []byte) ([]byte, bool) {
			listed, stale := g.awlState(key, cur, now)
			if !listed || !stale {
				return nil, false
			}
			rec, _ := decodeClient(cur)
			rec.Count++
			rec.Last = now
			return encodeClient(rec), true
		})
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// awlState: is the client whitelisted now, and is its record due for a refresh.
func (g *Greylister) awlState(key, val []byte, now time.Time) (listed, stale bool) {
	if val == nil {
		return false, false
	}
	rec, err := decodeClient(val)
	if err != nil {
		g.log.Warn("greylist: ignoring corrupt client record", "key", g.clientKeyText(key), "value", val)
		return false, false
	}
	if rec.Count < g.cfg.AutoWhitelistAfter || now.Sub(rec.Last) > g.cfg.MaxAge {
		return false, false
	}
	return true, now.Sub(rec.Last) >= refreshInterval || rec.Last.After(now)
}

// countPass counts a triplet of the client passing greylisting: at most once an hour.
func (g *Greylister) countPass(ctx context.Context, ip netip.Addr, now time.Time) error {
	key := g.clientKey(ip)
	count := 0
	err := g.store.Update(ctx, Clients, key, func(cur []byte) ([]byte, bool) {
		count = 0
		var rec clientRecord
		if cur != nil {
			r, err := decodeClient(cur)
			if err == nil && now.Sub(r.Last) <= g.cfg.MaxAge {
				rec = r
			}
		}
		if rec.Count > 0 && now.Sub(rec.Last) < refreshInterval && !rec.Last.After(now) {
			return nil, false
		}
		rec.Count++
		rec.Last = now
		count = rec.Count
		return encodeClient(rec), true
	})
	if err == nil && count == g.cfg.AutoWhitelistAfter {
		g.log.Info("greylist: client auto-whitelisted", "client", ip)
	}
	return err
}

// tripletKey is the store key of the triplet of in: lower-case
// "network/sender/recipient", SHA-256 of it in privacy mode.
func (g *Greylister) tripletKey(in Input) []byte {
	network := in.Origin
	if network == "" {
		network = clientNetwork(in.ClientIP, g.cfg.IPv4Prefix, g.cfg.IPv6Prefix)
	}
	return g.hashKey(strings.ToLower(network + "/" + NormalizeSender(in.Sender) + "/" + in.Recipient))
}

// clientKey is the store key of a client in the auto-whitelist: its full address.
func (g *Greylister) clientKey(ip netip.Addr) []byte {
	return g.hashKey(ip.Unmap().WithZone("").String())
}

func (g *Greylister) hashKey(text string) []byte {
	if g.cfg.Privacy {
		sum := sha256.Sum256([]byte(text))
		return sum[:]
	}
	return []byte(text)
}
