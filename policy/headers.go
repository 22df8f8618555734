package policy

import (
	"container/list"
	"strings"
	"sync"
	"time"
)

// Defaults of HeaderCache.
const (
	DefaultHeaderCacheSize = 20000
	DefaultHeaderCacheTTL  = time.Hour
	// maxHeadersPerInstance bounds the headers one message can collect.
	maxHeadersPerInstance = 16
)

// HeaderCache remembers, per message (Postfix's "instance" attribute), which
// headers were already emitted and which are still waiting for a reply to
// ride on. It is bounded twice: at most size messages (least recently used
// dropped first) and each forgotten ttl after its last use. It is safe for
// concurrent use, and can outlive a Pipeline so that a reload does not lose
// the headers of messages in flight.
type HeaderCache struct {
	mu      sync.Mutex
	size    int
	ttl     time.Duration
	now     func() time.Time
	lru     list.List // of *instanceHeaders, most recent first
	entries map[string]*list.Element
}

type instanceHeaders struct {
	instance string
	names    []string // lower-cased names emitted or pending
	pending  []Header
	expires  time.Time
}

// NewHeaderCache returns a cache for size messages, each kept ttl after its
// last use. Zero values take the defaults; now nil means time.Now.
func NewHeaderCache(size int, ttl time.Duration, now func() time.Time) *HeaderCache {
	if size <= 0 {
		size = DefaultHeaderCacheSize
	}
	if ttl <= 0 {
		ttl = DefaultHeaderCacheTTL
	}
	if now == nil {
		now = time.Now
	}
	return &HeaderCache{size: size, ttl: ttl, now: now, entries: make(map[string]*list.Element)}
}

// Len returns the number of messages remembered.
func (c *HeaderCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// next records the headers asked for by one request of instance (dropping
// names already emitted or pending for it) and, when pop is set, takes the
// oldest pending header off to send now. dropped counts headers refused as
// duplicates.
func (c *HeaderCache) next(instance string, add []Header, pop bool) (h Header, ok bool, dropped int) {
	if instance == "" {
		// No message identity: nothing can be spread or deduplicated.
		if pop && len(add) > 0 {
			return add[0], true, len(add) - 1
		}
		return Header{}, false, len(add)
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[instance]
	var e *instanceHeaders
	if el != nil {
		e = el.Value.(*instanceHeaders)
		if now.After(e.expires) {
			c.remove(el)
			el, e = nil, nil
		}
	}
	if e == nil {
		if len(add) == 0 {
			return Header{}, false, 0 // the common case: no state, no allocation
		}
		e = &instanceHeaders{instance: instance}
		el = c.lru.PushFront(e)
		c.entries[instance] = el
	} else {
		c.lru.MoveToFront(el)
	}
	e.expires = now.Add(c.ttl)
	for _, a := range add {
		if e.has(a.Name) || len(e.names) >= maxHeadersPerInstance {
			dropped++
			continue
		}
		e.names = append(e.names, strings.ToLower(a.Name))
		e.pending = append(e.pending, a)
	}
	if pop && len(e.pending) > 0 {
		h, ok = e.pending[0], true
		e.pending = e.pending[1:]
	}
	c.evict(now)
	return h, ok, dropped
}

func (e *instanceHeaders) has(name string) bool {
	for _, n := range e.names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// evict drops the least recently used entries beyond size, and expired ones
// at the old end of the list (the list is ordered by last use, so expiry
// order matches).
func (c *HeaderCache) evict(now time.Time) {
	for c.lru.Len() > c.size {
		c.remove(c.lru.Back())
	}
	for el := c.lru.Back(); el != nil && now.After(el.Value.(*instanceHeaders).expires); el = c.lru.Back() {
		c.remove(el)
	}
}

func (c *HeaderCache) remove(el *list.Element) {
	c.lru.Remove(el)
	delete(c.entries, el.Value.(*instanceHeaders).instance)
}
