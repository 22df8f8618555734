package greylist

import (
	"bytes"
	"context"
	"sync"
)

// migrateBatch is the number of entries read before they are written; migrateWorkers
// the number of writes in flight (a network store is latency-bound, not CPU-bound).
const (
	migrateBatch   = 512
	migrateWorkers = 16
)

// Migrate copies both buckets (triplets and the client auto-whitelist) from one store
// to another, typically from the bbolt file of a single MX to a Redis shared by several,
// so that growing does not greylist every sender again. It returns the number of
// entries copied and calls progress, when not nil, after every batch with the bucket
// and the number of its entries copied so far.
//
// Migrate is idempotent and safe while postgate already runs on the target: an entry
// present on both sides is merged, keeping the more advanced state — a triplet that
// passed over one still waiting, the later last-seen time of two passed ones, the
// earlier first-seen time of two waiting ones; for a client, the higher count and the
// later last-seen time. A record that cannot be decoded is copied only where the target
// has none. The target sets its own expiry: with [RedisStore], TTLs start at the
// migration (an entry already stale by its times is treated as expired by
// [Greylister.Check] all the same, and disappears after one TTL).
//
// The source is read with Scan, so a running daemon may keep using a bbolt source, but
// what it writes during the migration may or may not be copied: stop it, or run
// Migrate again, which copies the rest.
func Migrate(ctx context.Context, from, to Store, progress func(b Bucket, n int)) (int, error) {
	total := 0
	for _, b := range []Bucket{Triplets, Clients} {
		n, err := migrateBucket(ctx, from, to, b, progress)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

type migrateEntry struct{ key, val []byte }

func migrateBucket(ctx context.Context, from, to Store, b Bucket, progress func(Bucket, int)) (int, error) {
	copied := 0
	var werr error
	batch := make([]migrateEntry, 0, migrateBatch)
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		werr = writeBatch(ctx, to, b, batch)
		if werr != nil {
			return false
		}
		copied += len(batch)
		batch = batch[:0]
		if progress != nil {
			progress(b, copied)
		}
		return true
	}
	err := from.Scan(ctx, b, nil, func(key, val []byte) bool {
		batch = append(batch, migrateEntry{bytes.Clone(key), bytes.Clone(val)})
		if len(batch) < migrateBatch {
			return true
		}
		return flush()
	})
	if err == nil && werr == nil {
		flush()
	}
	if err == nil {
		err = werr
	}
	return copied, err
}

// writeBatch merges the entries into to, migrateWorkers at a time.
func writeBatch(ctx context.Context, to Store, b Bucket, batch []migrateEntry) error {
	work := make(chan migrateEntry)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range min(migrateWorkers, len(batch)) {
		wg.Go(func() {
			for e := range work {
				err := to.Update(ctx, b, e.key, func(cur []byte) ([]byte, bool) {
					return mergeRecord(b, cur, e.val)
				})
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, e := range batch {
		work <- e
	}
	close(work)
	wg.Wait()
	return first
}

// mergeRecord is the value to store when migrating val over cur (nil: absent), see
// Migrate. It is deterministic and idempotent: merging val again changes nothing.
func mergeRecord(b Bucket, cur, val []byte) ([]byte, bool) {
	if cur == nil {
		return val, true
	}
	if bytes.Equal(cur, val) {
		return nil, false
	}
	switch b {
	case Triplets:
		n, errN := decodeTriplet(val)
		c, errC := decodeTriplet(cur)
		switch {
		case errN != nil:
			return nil, false
		case errC != nil:
			return val, true
		case n.Passed != c.Passed:
			if n.Passed {
				return val, true
			}
			return nil, false
		case n.Passed:
			if n.Last.After(c.Last) {
				c.Last = n.Last
				return encodeTriplet(c), true
			}
			return nil, false
		default:
			if n.First.Before(c.First) {
				return val, true
			}
			return nil, false
		}
	case Clients:
		n, errN := decodeClient(val)
		c, errC := decodeClient(cur)
		switch {
		case errN != nil:
			return nil, false
		case errC != nil:
			return val, true
		}
		m := clientRecord{Count: max(n.Count, c.Count), Last: c.Last}
		if n.Last.After(c.Last) {
			m.Last = n.Last
		}
		if m.Count == c.Count && m.Last.Equal(c.Last) {
			return nil, false
		}
		return encodeClient(m), true
	}
	return nil, false
}
