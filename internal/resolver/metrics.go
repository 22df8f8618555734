package resolver

import (
	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/promreg"
)

type metrics struct {
	queries  *prometheus.CounterVec // upstream queries by qtype and rcode
	hits     prometheus.Counter
	misses   prometheus.Counter
	duration prometheus.Histogram // of each upstream exchange
}

// newMetrics makes the resolver's metrics and registers them with reg
// when it is not nil. Without a registerer they still count, unseen.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_dns_queries_total",
			Help: "DNS queries sent upstream, by query type and response code (TIMEOUT and NETERROR when there was no response).",
		}, []string{"qtype", "rcode"}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postgate_dns_cache_hits_total",
			Help: "DNS lookups answered from the cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postgate_dns_cache_misses_total",
			Help: "DNS lookups not in the cache (answered by an upstream query, possibly shared with concurrent lookups).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "postgate_dns_query_duration_seconds",
			Help:    "Duration of each upstream DNS exchange (one server, one transport).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	if reg != nil {
		var err error
		if m.queries, err = promreg.Register(reg, m.queries); err != nil {
			return nil, err
		}
		if m.hits, err = promreg.Register(reg, m.hits); err != nil {
			return nil, err
		}
		if m.misses, err = promreg.Register(reg, m.misses); err != nil {
			return nil, err
		}
		if m.duration, err = promreg.Register(reg, m.duration); err != nil {
			return nil, err
		}
	}
	return m, nil
}
