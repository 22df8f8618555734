package greylist

import (
	"context"
	"errors"
)

// Bucket names a keyspace of a [Store].
type Bucket uint8

const (
	// Triplets holds one record per triplet key.
	Triplets Bucket = iota
	// Clients holds the auto-whitelist: one record per client IP.
	Clients
)

func (b Bucket) String() string {
	switch b {
	case Triplets:
		return "triplets"
	case Clients:
		return "clients"
	}
	return "unknown"
}

// ErrClosed is returned by a [Store] used after Close.
var ErrClosed = errors.New("greylist: store closed")

// UpdateFunc computes the new value of a key from its current value (nil when the key
// is absent). It returns write=false to leave the key as it is, write=true with a nil
// value to delete the key, and write=true with a value to store that value.
//
// cur is only valid during the call. An UpdateFunc must be quick, must not call the
// store, and may be called more than once for one Update (a store with optimistic
// concurrency, like Redis with WATCH/MULTI, retries it on conflict): it must have no
// effect besides returning, and callers keep what its last call computed.
type UpdateFunc func(cur []byte) (value []byte, write bool)

// Store is the state behind a [Greylister]. The only write primitive is an atomic
// read-modify-write of one key, so it can be implemented on bbolt (see [BoltStore]),
// on Redis with a Lua script or WATCH/MULTI, or in memory.
type Store interface {
	// View calls fn with the current value of key (nil when absent), without writing.
	// val is only valid during the call.
	View(ctx context.Context, b Bucket, key []byte, fn func(val []byte) error) error

	// Update atomically applies fn to key and returns once the result is durable.
	// If ctx ends first, Update returns ctx.Err() and the update may or may not happen.
	// A store may give up on a key that other writers keep changing; it then returns
	// ErrUpdateConflict and the update did not happen.
	Update(ctx context.Context, b Bucket, key []byte, fn UpdateFunc) error

	// Sweep deletes the keys of b for which expired returns true, in small batches so
	// that concurrent requests are not held up. expired is called again on the current
	// value right before a delete, so an entry refreshed meanwhile survives.
	// It returns the number of keys deleted.
	Sweep(ctx context.Context, b Bucket, expired func(key, val []byte) bool) (int, error)

	// Scan calls fn for the keys of b starting with prefix, in key order, until fn
	// returns false. key and val are only valid during the call. A long scan need not
	// be a consistent snapshot.
	Scan(ctx context.Context, b Bucket, prefix []byte, fn func(key, val []byte) bool) error

	Close() error
}
