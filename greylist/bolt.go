package greylist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrLocked is returned by [OpenBolt] when another process (normally the running
// daemon) holds the database file.
var ErrLocked = errors.New("database is locked by a running postgate")

// BoltOptions configures [OpenBolt]. The zero value is usable.
type BoltOptions struct {
	// Timeout is how long to wait for the file lock held by another process before
	// failing with ErrLocked. 0 means 1s. Offline tools should keep it short.
	Timeout time.Duration

	// MaxBatch bounds the number of operations committed in one transaction
	// (default 1000), which bounds how long one commit takes.
	MaxBatch int

	// MmapSize is the initial size of the memory map (default 64 MiB). Growing the map
	// waits for all read transactions, so it should cover the expected database size.
	MmapSize int

	// NoSync skips fsync on commit. Much faster and NOT durable: a crash of the
	// machine may lose or corrupt the database. Only for throwaway databases.
	NoSync bool

	Logger *slog.Logger // nil = slog.Default()
}

// BoltStore is a [Store] in a bbolt file.
//
// Writes go through a single writer goroutine doing group commit: it takes every
// operation queued so far, applies them all in one read-write transaction, commits
// (one fsync pair for all of them), answers them, and starts again with what queued
// meanwhile. There is no artificial delay: an operation arriving at an idle store is
// committed at once, and under load the batch grows by itself. Every Update returns
// only after its transaction is on disk.
//
// Reads (View, Scan) use read-only transactions and do not go through the writer.
type BoltStore struct {
	db       *bolt.DB
	log      *slog.Logger
	maxBatch int

	mu     sync.RWMutex // held for reading while sending on ops; Close takes it to close ops
	closed bool
	ops    chan *writeOp
	exited chan struct{} // closed when the writer goroutine returns

	commits atomic.Uint64
	applied atomic.Uint64
}

type writeOp struct {
	apply func(tx *bolt.Tx) error
	done  chan error // buffered: the writer never blocks on an answer
}

// Bucket names in the file; "meta" holds the format version.
var (
	bucketNames = [...][]byte{Triplets: []byte("triplets"), Clients: []byte("clients")}
	metaBucket  = []byte("meta")
	formatKey   = []byte("format")
)

const formatVersion = 1

// scanChunk is the number of keys looked at per read transaction in Scan and Sweep,
// and the largest number of deletes per sweep write: keeps transactions short.
const scanChunk = 1000

// OpenBolt opens (creating if needed) the database at path.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.MmapSize <= 0 {
		opts.MmapSize = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.Timeout,
		// The freelist is rebuilt by scanning the file at open instead of being written
		// at every commit: fewer pages per commit.
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: opts.MmapSize,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	db.NoSync = opts.NoSync
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := meta.Get(formatKey); v == nil {
			if err := meta.Put(formatKey, []byte{formatVersion}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("unsupported database format %x", v)
		}
		for _, name := range bucketNames {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &BoltStore{
		db:       db,
		log:      opts.Logger,
		maxBatch: opts.MaxBatch,
		ops:      make(chan *writeOp, opts.MaxBatch),
		exited:   make(chan struct{}),
	}
	go s.writer()
	return s, nil
}

func bucketName(b Bucket) ([]byte, error) {
	if int(b) >= len(bucketNames) {
		return nil, fmt.Errorf("greylist: unknown bucket %d", b)
	}
	return bucketNames[b], nil
}

// writer is the single goroutine that writes: group commit, see BoltStore.
func (s *BoltStore) writer() {
	defer close(s.exited)
	batch := make([]*writeOp, 0, s.maxBatch)
	errs := make([]error, s.maxBatch)
	for op := range s.ops {
		batch = append(batch[:0], op)
	fill:
		for len(batch) < s.maxBatch {
			select {
			case op, ok := <-s.ops:
				if !ok {
					break fill
				}
				batch = append(batch, op)
			default:
				break fill
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, op := range batch {
				errs[i] = applyOp(op, tx)
			}
			return nil
		})
		s.commits.Add(1)
		s.applied.Add(uint64(len(batch)))
		if err != nil {
			s.log.Error("greylist: database commit failed", "err", err, "operations", len(batch))
		}
		for i, op := range batch {
			if err != nil {
				op.done <- err
			} else {
				op.done <- errs[i]
			}
			batch[i], errs[i] = nil, nil
		}
	}
}

// applyOp runs one operation, turning a panic into an error for that operation only:
// the writer serves everybody and must survive a bad UpdateFunc.
func applyOp(op *writeOp, tx *bolt.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("greylist: panic in update: %v", r)
		}
	}()
	return op.apply(tx)
}

// submit queues op for the writer and waits for its commit.
func (s *BoltStore) submit(ctx context.Context, op *writeOp) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// View implements [Store].
func (s *BoltStore) View(ctx context.Context, b Bucket, key []byte, fn func(val []byte) error) error {
	name, err := bucketName(b)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.mapErr(s.db.View(func(tx *bolt.Tx) error {
		return fn(tx.Bucket(name).Get(key))
	}))
}

// Update implements [Store].
func (s *BoltStore) Update(ctx context.Context, b Bucket, key []byte, fn UpdateFunc) error {
	name, err := bucketName(b)
	if err != nil {
		return err
	}
	if len(key) == 0 {
		return errors.New("greylist: empty key")
	}
	// bbolt needs the key until the commit, which may be after a cancelled ctx made
	// us return: keep our own copy.
	key = bytes.Clone(key)
	op := &writeOp{done: make(chan error, 1)}
	op.apply = func(tx *bolt.Tx) error {
		bk := tx.Bucket(name)
		val, write := fn(bk.Get(key))
		switch {
		case !write:
			return nil
		case val == nil:
			return bk.Delete(key)
		default:
			return bk.Put(key, val)
		}
	}
	return s.submit(ctx, op)
}

// Scan implements [Store]. It reads in chunks, one short read transaction each.
func (s *BoltStore) Scan(ctx context.Context, b Bucket, prefix []byte, fn func(key, val []byte) bool) error {
	name, err := bucketName(b)
	if err != nil {
		return err
	}
	start := append([]byte{}, prefix...) // non-nil: nil ends the loop
	for start != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(name).Cursor()
			k, v := c.Seek(start)
			start = nil
			for n := 0; k != nil && bytes.HasPrefix(k, prefix); n++ {
				if n == scanChunk {
					start = bytes.Clone(k)
					return nil
				}
				if !fn(k, v) {
					return nil
				}
				k, v = c.Next()
			}
			return nil
		})
		if err != nil {
			return s.mapErr(err)
		}
	}
	return nil
}

// Sweep implements [Store]: it reads up to scanChunk keys per read transaction and
// deletes the expired ones among them through the writer, so the deletes share
// commits with requests instead of holding the write lock for long.
func (s *BoltStore) Sweep(ctx context.Context, b Bucket, expired func(key, val []byte) bool) (int, error) {
	name, err := bucketName(b)
	if err != nil {
		return 0, err
	}
	deleted := 0
	start := []byte{}
	for start != nil {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		var candidates [][]byte
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(name).Cursor()
			k, v := c.Seek(start)
			start = nil
			for n := 0; k != nil; n++ {
				if n == scanChunk {
					start = bytes.Clone(k)
					return nil
				}
				if expired(k, v) {
					candidates = append(candidates, bytes.Clone(k))
				}
				k, v = c.Next()
			}
			return nil
		})
		if err != nil {
			return deleted, s.mapErr(err)
		}
		if len(candidates) == 0 {
			continue
		}
		n := 0
		op := &writeOp{done: make(chan error, 1)}
		op.apply = func(tx *bolt.Tx) error {
			n = 0
			bk := tx.Bucket(name)
			for _, k := range candidates {
				// Re-check: the entry may have been refreshed since we read it.
				if v := bk.Get(k); v != nil && expired(k, v) {
					if err := bk.Delete(k); err != nil {
						return err
					}
					n++
				}
			}
			return nil
		}
		if err := s.submit(ctx, op); err != nil {
			return deleted, err
		}
		deleted += n
	}
	return deleted, nil
}

// Close stops the writer after it has committed what is queued, then closes the file.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()
	<-s.exited
	return s.db.Close()
}

// CheckConsistency runs bbolt's consistency check on the whole file.
func (s *BoltStore) CheckConsistency() error {
	return s.mapErr(s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}))
}

// CommitStats reports how many write transactions were committed and how many
// operations they carried: operations/commits is the average group-commit batch.
func (s *BoltStore) CommitStats() (commits, operations uint64) {
	return s.commits.Load(), s.applied.Load()
}

// Path is the database file name.
func (s *BoltStore) Path() string { return s.db.Path() }

func (s *BoltStore) mapErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
