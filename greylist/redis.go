package greylist

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"postgate/internal/promreg"
)

// RedisOptions configures [OpenRedis]. Only Addrs is required.
type RedisOptions struct {
	// Addrs is one "host:port" (a single Redis, Valkey...), or several: the seed nodes of
	// a Cluster, or the Sentinels when MasterName is set (go-redis's universal client).
	Addrs      []string
	MasterName string // Sentinel: the name of the monitored master

	Username, Password string // ACL user (Redis 6+) or just the requirepass password
	DB                 int    // database number (not with Cluster)
	TLS                *tls.Config

	// KeyPrefix is put before every key (default "postgate:greylist:"): a key is
	// KeyPrefix + bucket name + ":" + key, e.g. "postgate:greylist:triplets:192.0.2.0/a@b/c@d".
	// Several greylists can share one Redis database with different prefixes.
	KeyPrefix string

	// DialTimeout bounds one connection attempt (default 1s). Timeout is the read and
	// write deadline of every command (default 250ms). A whole View or Update, conflict
	// retries included, is bounded by DialTimeout + Timeout: a Redis that is down or
	// slow makes calls fail quickly, so that Postfix is not held (the caller fails open).
	DialTimeout, Timeout time.Duration

	// TTL gives the expiry of a key written with value val in bucket b; it is set on
	// every write and replaces sweeps. A duration <= 0 stores the key without expiry.
	// nil means DefaultConfig().KeyTTL(); a daemon passes its own Config.KeyTTL().
	TTL func(b Bucket, val []byte) time.Duration

	// Registerer, when set, exports postgate_greylist_redis_errors_total and
	// postgate_greylist_redis_update_conflicts_total.
	Registerer prometheus.Registerer

	Logger *slog.Logger // nil = slog.Default()
}

// KeyTTL returns the expiry a store with key TTLs ([RedisStore]) should give a record
// written by a Greylister with configuration c (defaults filled in as [New] does): a
// triplet still waiting for its retry lives RetryWindow, a triplet that passed and an
// auto-whitelist client live MaxAge. A record is written with its First or Last time
// set to the time of the write, so the key expires when [Greylister.Sweep] would have
// deleted it. Waiting triplets are most of the keys (spam is rarely retried): giving
// them RetryWindow instead of MaxAge keeps Redis' memory close to the bbolt file's size.
func (c Config) KeyTTL() func(b Bucket, val []byte) time.Duration {
	c = New(nil, c, nil, nil).Config()
	return func(b Bucket, val []byte) time.Duration {
		if b == Triplets {
			if rec, err := decodeTriplet(val); err == nil && !rec.Passed {
				return c.RetryWindow
			}
		}
		return c.MaxAge
	}
}

// RedisStore is a [Store] in Redis (or a server speaking its protocol, like Valkey),
// shared by every postgate pointed at it: a sender greylisted through one MX host
// passes through another one after the delay.
//
// Each key is a plain Redis string holding the same bytes as the bbolt store's value,
// with a TTL set on every write (RedisOptions.TTL). Update is optimistic: WATCH key,
// GET, run the UpdateFunc, then MULTI SET (or DEL) EXEC, again from the GET when
// another writer changed the key in between. Reads are one GET.
//
// When Redis is unreachable or slow, calls return an error within DialTimeout +
// Timeout; go-redis reconnects by itself, so the store works again as soon as Redis
// is back, without being reopened.
type RedisStore struct {
	rdb         redis.UniversalClient
	prefix      string
	ttl         func(Bucket, []byte) time.Duration
	callTimeout time.Duration
	log         *slog.Logger

	closed atomic.Bool
	down   atomic.Bool // the last call failed on a connection problem: log once per outage

	errs      *prometheus.CounterVec
	conflicts prometheus.Counter
}

// maxUpdateAttempts bounds the optimistic retries of one Update. Conflicts need two
// writers on one key within a few round trips: rare in practice (one triplet, or one
// client's AWL record, from two MX hosts at once), and a jittered backoff spreads them.
const maxUpdateAttempts = 32

// redisScanCount is the COUNT hint of SCAN and the number of GETs per pipeline.
const redisScanCount = 1000

// ErrUpdateConflict is returned by [RedisStore.Update] when other writers kept
// changing the key for all of its attempts.
var ErrUpdateConflict = errors.New("greylist: redis: too many concurrent updates of one key")

// OpenRedis connects to Redis and pings it once. A Redis that answers with an error
// (wrong password, unknown user, bad database number) is a configuration error and
// fails the open. A Redis that cannot be reached is not: the store is returned, a
// warning is logged, and every call fails (quickly) until Redis is reachable, so that
// the rest of postgate (SPF, DNSBL, DKIM) keeps working and greylisting fails open
// meanwhile rather than the daemon refusing to start because of a shared server.
func OpenRedis(ctx context.Context, o RedisOptions) (*RedisStore, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("greylist: redis: no address")
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "postgate:greylist:"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	if o.TTL == nil {
		o.TTL = DefaultConfig().KeyTTL()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      o.Addrs,
		MasterName: o.MasterName,
		Username:   o.Username,
		Password:   o.Password,
		DB:         o.DB,
		TLSConfig:  o.TLS,

		DialTimeout:  o.DialTimeout,
		ReadTimeout:  o.Timeout,
		WriteTimeout: o.Timeout,
		// Socket deadlines also follow the context's deadline: that is what bounds a
		// whole call (see callCtx).
		ContextTimeoutEnabled: true,
		// One dial per attempt (the default is 5 with 100ms pauses: half a second per
		// request while Redis is down). After PoolSize failed dials go-redis stops
		// dialing in requests and probes once a second in the background.
		DialerRetries: 1,
		// One retry of a command that failed on the network: the pooled connection may
		// be one that died with a restarted Redis.
		MaxRetries: 1,
		// No CLIENT SETINFO on every new connection: one round trip less, nothing to
		// fail on servers that lack it.
		DisableIdentity: true,
	})
	s := &RedisStore{
		rdb:         rdb,
		prefix:      o.KeyPrefix,
		ttl:         o.TTL,
		callTimeout: o.DialTimeout + o.Timeout,
		log:         o.Logger,
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_greylist_redis_errors_total",
			Help: "Greylist store operations on Redis that failed (the request failed open), by operation.",
		}, []string{"op"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postgate_greylist_redis_update_conflicts_total",
			Help: "Optimistic greylist updates on Redis retried because another writer changed the key.",
		}),
	}
	if o.Registerer != nil {
		var err error
		if s.errs, err = promreg.Register(o.Registerer, s.errs); err != nil {
			rdb.Close()
			return nil, fmt.Errorf("greylist: redis: metrics: %w", err)
		}
		if s.conflicts, err = promreg.Register(o.Registerer, s.conflicts); err != nil {
			rdb.Close()
			return nil, fmt.Errorf("greylist: redis: metrics: %w", err)
		}
	}

	pctx, cancel := s.callCtx(ctx)
	defer cancel()
	err := rdb.Ping(pctx).Err()
	var rerr redis.Error
	switch {
	case err == nil:
	case ctx.Err() != nil:
		rdb.Close()
		return nil, ctx.Err()
	case errors.As(err, &rerr):
		rdb.Close()
		return nil, fmt.Errorf("greylist: redis %s: %w", strings.Join(o.Addrs, ","), err)
	default:
		s.down.Store(true)
		s.log.Warn("greylist: redis unreachable at start; greylisting lets mail through until it is reachable",
			"addrs", o.Addrs, "err", err)
	}
	return s, nil
}

// callCtx bounds one call: see RedisOptions.Timeout.
func (s *RedisStore) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.callTimeout)
}

// bucketPrefix is the prefix of every Redis key of bucket b.
func (s *RedisStore) bucketPrefix(b Bucket) (string, error) {
	name, err := bucketName(b)
	if err != nil {
		return "", err
	}
	return s.prefix + string(name) + ":", nil
}

// View implements [Store].
func (s *RedisStore) View(ctx context.Context, b Bucket, key []byte, fn func(val []byte) error) error {
	bp, err := s.bucketPrefix(b)
	if err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	val, err := s.rdb.Get(cctx, bp+string(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		val, err = nil, nil
	}
	if err != nil {
		return s.failed(ctx, "view", err)
	}
	s.ok()
	return fn(val)
}

// Update implements [Store] with WATCH/GET/MULTI/EXEC, see [RedisStore]. fn may be
// called several times; after maxUpdateAttempts conflicts it gives up with
// ErrUpdateConflict.
func (s *RedisStore) Update(ctx context.Context, b Bucket, key []byte, fn UpdateFunc) error {
	bp, err := s.bucketPrefix(b)
	if err != nil {
		return err
	}
	if len(key) == 0 {
		return errors.New("greylist: empty key")
	}
	if s.closed.Load() {
		return ErrClosed
	}
	rkey := bp + string(key)
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	for attempt := range maxUpdateAttempts {
		if attempt > 0 {
			s.conflicts.Inc()
			// Jittered exponential backoff, 100µs up to 12.8ms.
			d := time.Duration(rand.Int64N(int64(100*time.Microsecond) << min(attempt, 8)))
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-cctx.Done():
				t.Stop()
				return s.failed(ctx, "update", cctx.Err())
			}
		}
		var fnErr error
		err := s.rdb.Watch(cctx, func(tx *redis.Tx) error {
			cur, err := tx.Get(cctx, rkey).Bytes()
			if errors.Is(err, redis.Nil) {
				cur, err = nil, nil
			}
			if err != nil {
				return err
			}
			val, write, err := callUpdate(fn, cur)
			if err != nil {
				fnErr = err
				return err
			}
			if !write {
				return nil
			}
			_, err = tx.TxPipelined(cctx, func(p redis.Pipeliner) error {
				if val == nil {
					p.Del(cctx, rkey)
				} else {
					p.Set(cctx, rkey, val, s.keyTTL(b, val))
				}
				return nil
			})
			return err
		}, rkey)
		switch {
		case fnErr != nil:
			return fnErr
		case errors.Is(err, redis.TxFailedErr):
			continue
		case err != nil:
			return s.failed(ctx, "update", err)
		}
		s.ok()
		return nil
	}
	s.errs.WithLabelValues("update").Inc()
	return ErrUpdateConflict
}

// keyTTL is the expiry of a write: 0 = none; at least 1ms (SET PX takes milliseconds).
func (s *RedisStore) keyTTL(b Bucket, val []byte) time.Duration {
	d := s.ttl(b, val)
	if d <= 0 {
		return 0
	}
	return max(d, time.Millisecond)
}

// callUpdate runs fn, turning a panic into an error like the bbolt store does: the
// store serves every request and must survive a bad UpdateFunc.
func callUpdate(fn UpdateFunc, cur []byte) (val []byte, write bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("greylist: panic in update: %v", r)
		}
	}()
	val, write = fn(cur)
	return val, write, nil
}

// Scan implements [Store]. Redis has no ordered iteration, so Scan first collects the
// matching key names with SCAN (keys only, no values: roughly 100 bytes per key), sorts
// them, then reads the values in pipelines of 1000 GETs and calls fn in key order.
// Keys deleted or expired between the two steps are skipped. Scans are for admin
// commands and migration, not for the request path.
func (s *RedisStore) Scan(ctx context.Context, b Bucket, prefix []byte, fn func(key, val []byte) bool) error {
	bp, err := s.bucketPrefix(b)
	if err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	var keys []string
	var mu sync.Mutex
	err = s.scanKeys(ctx, bp+string(prefix), func(batch []string) error {
		mu.Lock()
		keys = append(keys, batch...)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return s.failed(ctx, "scan", err)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys) // SCAN may return a key twice
	for chunk := range slices.Chunk(keys, redisScanCount) {
		vals, err := s.getAll(ctx, chunk)
		if err != nil {
			return s.failed(ctx, "scan", err)
		}
		for i, v := range vals {
			if v != nil && !fn([]byte(chunk[i][len(bp):]), v) {
				s.ok()
				return nil
			}
		}
	}
	s.ok()
	return nil
}

// Sweep implements [Store]. Expiry does not need it: Redis deletes keys when their TTL
// runs out, and a daemon on Redis should not run [Greylister.RunSweeper] (every host
// would scan the whole shared keyspace). It is there for what deletes by content, like
// [Greylister.DeleteTriplets] and [Greylister.Sweep] run by hand: it SCANs the bucket,
// and deletes each key for which expired returns true through Update, which calls
// expired again on the current value, so an entry refreshed meanwhile survives.
func (s *RedisStore) Sweep(ctx context.Context, b Bucket, expired func(key, val []byte) bool) (int, error) {
	bp, err := s.bucketPrefix(b)
	if err != nil {
		return 0, err
	}
	if s.closed.Load() {
		return 0, ErrClosed
	}
	deleted := 0
	var mu sync.Mutex // scanKeys calls back concurrently for the masters of a Cluster
	err = s.scanKeys(ctx, bp, func(batch []string) error {
		vals, err := s.getAll(ctx, batch)
		if err != nil {
			return err
		}
		for i, v := range vals {
			key := []byte(batch[i][len(bp):])
			if v == nil || !expired(key, v) {
				continue
			}
			gone := false
			err := s.Update(ctx, b, key, func(cur []byte) ([]byte, bool) {
				gone = cur != nil && expired(key, cur)
				return nil, gone
			})
			if err != nil {
				return err
			}
			if gone {
				mu.Lock()
				deleted++
				mu.Unlock()
			}
		}
		return nil
	})
	if err != nil {
		return deleted, s.failed(ctx, "sweep", err)
	}
	return deleted, nil
}

// scanKeys calls fn with the batches of key names matching prefix* that SCAN returns,
// on every master of a Cluster (concurrently), on the one server otherwise.
func (s *RedisStore) scanKeys(ctx context.Context, prefix string, fn func(keys []string) error) error {
	pattern := globEscape(prefix) + "*"
	scan := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			keys, next, err := c.Scan(ctx, cursor, pattern, redisScanCount).Result()
			if err != nil {
				return err
			}
			// MATCH is a glob on bytes: check the prefix ourselves all the same.
			keys = slices.DeleteFunc(keys, func(k string) bool { return !strings.HasPrefix(k, prefix) })
			if len(keys) > 0 {
				if err := fn(keys); err != nil {
					return err
				}
			}
			if next == 0 { // SCAN's full iteration always ends with cursor 0
				return nil
			}
			cursor = next
		}
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, scan)
	case *redis.Client:
		return scan(ctx, c)
	default:
		return fmt.Errorf("greylist: redis: cannot scan with a %T", s.rdb)
	}
}

// getAll reads keys in one pipeline (split per node by a Cluster client); absent keys
// give nil.
func (s *RedisStore) getAll(ctx context.Context, keys []string) ([][]byte, error) {
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	vals := make([][]byte, len(keys))
	for i, c := range cmds {
		v, err := c.(*redis.StringCmd).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, err
		default:
			vals[i] = v
		}
	}
	return vals, nil
}

// globEscape quotes the characters special in a SCAN MATCH pattern; privacy-mode keys
// are binary hashes and may contain any of them.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := range len(s) {
		if bytes.IndexByte([]byte(`*?[]\`), s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Close closes the connections. Calls after Close return ErrClosed.
func (s *RedisStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.rdb.Close()
}

// failed counts and wraps the error of a call; ctx is the caller's context. The first
// failure of an outage is logged (the caller logs every failed request anyway).
func (s *RedisStore) failed(ctx context.Context, op string, err error) error {
	if errors.Is(err, redis.ErrClosed) || s.closed.Load() {
		return ErrClosed
	}
	if ctx.Err() != nil {
		return ctx.Err() // the caller gave up: not a Redis problem
	}
	s.errs.WithLabelValues(op).Inc()
	var rerr redis.Error
	if !errors.As(err, &rerr) && s.down.CompareAndSwap(false, true) {
		s.log.Warn("greylist: redis unreachable; greylisting lets mail through until it is reachable", "err", err)
	}
	return fmt.Errorf("greylist: redis %s: %w", op, err)
}

// ok notes a successful call, logging the end of an outage.
func (s *RedisStore) ok() {
	if s.down.Load() && s.down.CompareAndSwap(true, false) {
		s.log.Info("greylist: redis reachable again")
	}
}
