package resolver

import "sync"

// flights coalesces concurrent lookups of one key into one upstream query.
// golang.org/x/sync is not in the module graph, and this is all we need.
type flights struct {
	mu    sync.Mutex
	calls map[cacheKey]*flight
}

// flight is one upstream lookup in progress. e is set before done closes.
type flight struct {
	done chan struct{}
	e    *entry
}

// join returns the flight for key, starting one with run if none is in
// progress. Before starting, it asks the cache once more under the lock:
// a flight stores its result in the cache before it leaves the map, so a
// caller arriving just after one ended finds the cached entry instead of
// querying again.
func (f *flights) join(key cacheKey, cached func() (*entry, bool), run func() *entry) (*flight, *entry) {
	f.mu.Lock()
	if fl, ok := f.calls[key]; ok {
		f.mu.Unlock()
		return fl, nil
	}
	if e, ok := cached(); ok {
		f.mu.Unlock()
		return nil, e
	}
	fl := &flight{done: make(chan struct{})}
	if f.calls == nil {
		f.calls = make(map[cacheKey]*flight)
	}
	f.calls[key] = fl
	f.mu.Unlock()

	// The query runs apart from every caller, so that one caller giving up
	// does not cancel it for the others.
	go func() {
		fl.e = run()
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(fl.done)
	}()
	return fl, nil
}
