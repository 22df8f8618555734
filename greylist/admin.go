package greylist

import (
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"time"
)

// This file holds what the daemon's maintenance and the admin commands (CLI, HTTP)
// need: expiry, listing, statistics, deletion, manual whitelisting. It works on any
// Store, so also on a BoltStore opened offline by the CLI with New(store, cfg, nil, nil).

// ErrPrivacy is returned for operations that need key text in privacy mode.
var ErrPrivacy = errors.New("greylist: not possible in privacy mode (keys are hashed)")

// SweepResult counts the entries a sweep deleted.
type SweepResult struct {
	Triplets int
	Clients  int
}

// Sweep deletes expired entries: triplets that passed and were not seen for MaxAge,
// triplets not retried within RetryWindow, AWL clients not seen for MaxAge, and corrupt
// records. It works in small batches and can run while requests are served.
func (g *Greylister) Sweep(ctx context.Context) (SweepResult, error) {
	now := g.now()
	var res SweepResult
	var err error
	res.Triplets, err = g.store.Sweep(ctx, Triplets, func(key, val []byte) bool {
		return g.tripletExpired(val, now)
	})
	if err != nil {
		return res, err
	}
	res.Clients, err = g.store.Sweep(ctx, Clients, func(key, val []byte) bool {
		rec, err := decodeClient(val)
		return err != nil || now.Sub(rec.Last) > g.cfg.MaxAge
	})
	return res, err
}

func (g *Greylister) tripletExpired(val []byte, now time.Time) bool {
	rec, err := decodeTriplet(val)
	switch {
	case err != nil:
		return true
	case rec.Passed:
		return now.Sub(rec.Last) > g.cfg.MaxAge
	default:
		return now.Sub(rec.First) > g.cfg.RetryWindow
	}
}

// RunSweeper calls Sweep every Config.SweepInterval until ctx ends.
func (g *Greylister) RunSweeper(ctx context.Context) {
	t := time.NewTicker(g.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		res, err := g.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			g.log.Error("greylist: sweep failed", "err", err)
			continue
		}
		g.log.Info("greylist: swept expired entries", "triplets", res.Triplets, "clients", res.Clients,
			"duration", time.Since(start))
	}
}

// TripletEntry is one triplet as listed.
type TripletEntry struct {
	Key string // key text; hex SHA-256 in privacy mode
	// Network (or Origin), Sender and Recipient split from the key text (empty in
	// privacy mode). Best effort: a '/' inside an address makes the split ambiguous.
	Network, Sender, Recipient string
	First, Last                time.Time
	Passed                     bool
}

// ClientEntry is one client of the auto-whitelist as listed.
type ClientEntry struct {
	Client      string // IP address; hex SHA-256 in privacy mode
	Count       int    // hours in which a triplet of the client passed
	Last        time.Time
	Whitelisted bool // the count reached AutoWhitelistAfter and the entry has not expired
}

// ListOptions filters listings. Filters apply to the key text (Key, Client).
type ListOptions struct {
	Prefix   string // keys starting with this (case-insensitive)
	Contains string // keys containing this (case-insensitive)
	Limit    int    // at most this many entries; 0 = all
}

func (o ListOptions) match(text string) bool {
	return strings.HasPrefix(text, strings.ToLower(o.Prefix)) &&
		strings.Contains(text, strings.ToLower(o.Contains))
}

// scanPrefix is the store prefix to scan for o: the key prefix itself, unless keys are
// hashed (then the filter applies to the hex text, and everything is scanned).
func (g *Greylister) scanPrefix(o ListOptions) []byte {
	if g.cfg.Privacy {
		return nil
	}
	return []byte(strings.ToLower(o.Prefix))
}

// ListTriplets lists triplets in key order. Corrupt records are skipped.
func (g *Greylister) ListTriplets(ctx context.Context, o ListOptions) ([]TripletEntry, error) {
	var out []TripletEntry
	err := g.store.Scan(ctx, Triplets, g.scanPrefix(o), func(key, val []byte) bool {
		text := g.keyText(key)
		if !o.match(text) {
			return true
		}
		rec, err := decodeTriplet(val)
		if err != nil {
			return true
		}
		e := TripletEntry{Key: text, First: rec.First, Last: rec.Last, Passed: rec.Passed}
		if !g.cfg.Privacy {
			e.Network, e.Sender, e.Recipient = splitKeyText(text)
		}
		out = append(out, e)
		return o.Limit <= 0 || len(out) < o.Limit
	})
	return out, err
}

// ListClients lists the auto-whitelist in key order. Corrupt records are skipped.
func (g *Greylister) ListClients(ctx context.Context, o ListOptions) ([]ClientEntry, error) {
	now := g.now()
	var out []ClientEntry
	err := g.store.Scan(ctx, Clients, g.scanPrefix(o), func(key, val []byte) bool {
		text := g.clientKeyText(key)
		if !o.match(text) {
			return true
		}
		rec, err := decodeClient(val)
		if err != nil {
			return true
		}
		out = append(out, ClientEntry{
			Client: text, Count: rec.Count, Last: rec.Last,
			Whitelisted: g.cfg.AutoWhitelistAfter > 0 && rec.Count >= g.cfg.AutoWhitelistAfter &&
				now.Sub(rec.Last) <= g.cfg.MaxAge,
		})
		return o.Limit <= 0 || len(out) < o.Limit
	})
	return out, err
}

// Stats counts the entries of the store.
type Stats struct {
	Triplets   int // all triplet records
	Passed     int // triplets that passed greylisting
	Pending    int // triplets waiting for a retry
	Clients    int // client records of the auto-whitelist
	AWLClients int // clients currently auto-whitelisted
	Corrupt    int // undecodable records (deleted by the next sweep)
}

// Stats scans the store and counts. Expired entries not yet swept are counted.
func (g *Greylister) Stats(ctx context.Context) (Stats, error) {
	now := g.now()
	var st Stats
	err := g.store.Scan(ctx, Triplets, nil, func(key, val []byte) bool {
		rec, err := decodeTriplet(val)
		switch {
		case err != nil:
			st.Corrupt++
		case rec.Passed:
			st.Triplets++
			st.Passed++
		default:
			st.Triplets++
			st.Pending++
		}
		return true
	})
	if err != nil {
		return st, err
	}
	err = g.store.Scan(ctx, Clients, nil, func(key, val []byte) bool {
		rec, err := decodeClient(val)
		if err != nil {
			st.Corrupt++
			return true
		}
		st.Clients++
		if g.cfg.AutoWhitelistAfter > 0 && rec.Count >= g.cfg.AutoWhitelistAfter && now.Sub(rec.Last) <= g.cfg.MaxAge {
			st.AWLClients++
		}
		return true
	})
	return st, err
}

// DeleteTriplet deletes the triplet Check would use for in (works in privacy mode).
// It reports whether there was one.
func (g *Greylister) DeleteTriplet(ctx context.Context, in Input) (bool, error) {
	if !in.ClientIP.IsValid() && in.Origin == "" {
		return false, ErrNoClient
	}
	return g.deleteKey(ctx, Triplets, g.tripletKey(in))
}

// TripletFilter selects triplets by the parts of their key; empty parts match all,
// at least one must be set.
type TripletFilter struct {
	// Network is a client address (masked to the configured prefix, so any address of
	// the network will do) or an Origin string.
	Network string
	Sender  string // normalised like in Check
	// SenderSet selects the null sender when Sender is "".
	SenderSet bool
	Recipient string
}

// DeleteTriplets deletes all triplets matching f and returns how many. Not available
// in privacy mode.
func (g *Greylister) DeleteTriplets(ctx context.Context, f TripletFilter) (int, error) {
	if g.cfg.Privacy {
		return 0, ErrPrivacy
	}
	network := strings.ToLower(f.Network)
	if ip, err := netip.ParseAddr(f.Network); err == nil {
		network = clientNetwork(ip, g.cfg.IPv4Prefix, g.cfg.IPv6Prefix)
	}
	wantSender := f.Sender != "" || f.SenderSet
	sender := strings.ToLower(NormalizeSender(f.Sender))
	rcpt := strings.ToLower(f.Recipient)
	if network == "" && !wantSender && rcpt == "" {
		return 0, errors.New("greylist: empty triplet filter")
	}
	return g.store.Sweep(ctx, Triplets, func(key, val []byte) bool {
		n, s, r := splitKeyText(string(key))
		return (network == "" || n == network) && (!wantSender || s == sender) && (rcpt == "" || r == rcpt)
	})
}

// DeleteClient removes a client IP from the auto-whitelist. It reports whether it
// was there.
func (g *Greylister) DeleteClient(ctx context.Context, ip netip.Addr) (bool, error) {
	return g.deleteKey(ctx, Clients, g.clientKey(ip))
}

// WhitelistClient puts a client IP in the auto-whitelist at the threshold, as if its
// triplets had passed AutoWhitelistAfter times; it expires like any AWL entry.
func (g *Greylister) WhitelistClient(ctx context.Context, ip netip.Addr) error {
	if g.cfg.AutoWhitelistAfter <= 0 {
		return errors.New("greylist: the client auto-whitelist is disabled")
	}
	if !ip.IsValid() {
		return ErrNoClient
	}
	now := g.now()
	return g.store.Update(ctx, Clients, g.clientKey(ip), func(cur []byte) ([]byte, bool) {
		rec, err := decodeClient(cur)
		if err != nil || rec.Count < g.cfg.AutoWhitelistAfter {
			rec.Count = g.cfg.AutoWhitelistAfter
		}
		rec.Last = now
		return encodeClient(rec), true
	})
}

func (g *Greylister) deleteKey(ctx context.Context, b Bucket, key []byte) (bool, error) {
	found := false
	err := g.store.Update(ctx, b, key, func(cur []byte) ([]byte, bool) {
		found = cur != nil
		return nil, found
	})
	return found, err
}

// keyText is a triplet key for display and filters.
func (g *Greylister) keyText(key []byte) string {
	if g.cfg.Privacy {
		return hex.EncodeToString(key)
	}
	return string(key)
}

func (g *Greylister) clientKeyText(key []byte) string { return g.keyText(key) }

// splitKeyText splits "network/sender/recipient". The network has no '/'; the sender
// is "" (null sender) or an address whose domain has no '/', so the sender ends at the
// first '/' after its '@'.
func splitKeyText(text string) (network, sender, recipient string) {
	network, rest, _ := strings.Cut(text, "/")
	if strings.HasPrefix(rest, "/") {
		return network, "", rest[1:]
	}
	slash := strings.IndexByte(rest, '/')
	if at := strings.IndexByte(rest, '@'); at >= 0 {
		slash = strings.IndexByte(rest[at:], '/')
		if slash >= 0 {
			slash += at
		}
	}
	if slash < 0 {
		return network, rest, ""
	}
	return network, rest[:slash], rest[slash+1:]
}
