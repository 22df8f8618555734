// Package bench holds side-by-side measurements of postgate against the tools
// it replaces (postgrey, OpenDKIM), run with the real daemons and load
// generators that speak the real protocols. They are measurements, not tests:
// they run only with POSTGATE_BENCH=1, and their numbers go to
// docs/performance.md.
package bench
