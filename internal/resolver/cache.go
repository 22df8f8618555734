package resolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheKey identifies a cached answer: the name lower-cased (ASCII only,
// as DNS compares names) without its trailing dot, and the query type.
type cacheKey struct {
	name  string
	qtype uint16
}

// entry is one lookup's result. Entries are shared between callers and
// must not be modified once made.
type entry struct {
	outcome
	owner   string   // owner of records: the end of the CNAME chain
	records []dns.RR // the records of the type asked, in answer order
	ttl     time.Duration
	noSOA   bool      // a negative answer without SOA: never cached (RFC 2308 section 5)
	expires time.Time // set when cached
}

// cache is a size-bounded LRU of entries that expire by TTL. All
// operations are O(1).
type cache struct {
	mu    sync.Mutex
	max   int
	items map[cacheKey]*list.Element // of *cached
	lru   *list.List                 // front = most recently used
}

type cached struct {
	key cacheKey
	e   *entry
}

func newCache(size int) *cache {
	return &cache{max: size, items: make(map[cacheKey]*list.Element), lru: list.New()}
}

// get returns the live entry for key, dropping it if it has expired.
func (c *cache) get(key cacheKey, now time.Time) (*entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cached).e
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.items, key)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

// put stores e, evicting the least recently used entry when full.
func (c *cache) put(key cacheKey, e *entry) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value.(*cached).e = e
		c.lru.MoveToFront(el)
		return
	}
	if c.lru.Len() >= c.max {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.items, oldest.Value.(*cached).key)
	}
	c.items[key] = c.lru.PushFront(&cached{key: key, e: e})
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// keyFor returns the cache key of name: "Example.COM." and "example.com"
// share one.
func keyFor(name string, qtype uint16) cacheKey {
	if dns.IsFqdn(name) && name != "." {
		name = name[:len(name)-1]
	}
	return cacheKey{name: asciiLower(name), qtype: qtype}
}

// asciiLower lower-cases A-Z only: DNS names are compared that way, and
// other bytes (a name may hold any) must stay as they are. It does not
// allocate when there is nothing to change.
func asciiLower(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}
