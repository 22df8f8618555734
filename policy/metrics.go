package policy

import (
	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/promreg"
)

// Metrics are the policy service's Prometheus metrics. One Metrics is meant
// to be shared by a Server and every Pipeline it runs (a reload builds a new
// Pipeline but keeps the counters).
type Metrics struct {
	requests       *prometheus.CounterVec
	duration       prometheus.Histogram
	checkErrors    *prometheus.CounterVec
	connections    prometheus.Gauge
	protocolErrors *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg; nil reg means
// they are kept but not registered (tests, or no metrics endpoint). When
// reg already holds them (NewMetrics called twice on it) the registered
// collectors are reused.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_policy_requests_total",
			Help: "Policy requests answered, by action verb and reason (check name or a fixed word).",
		}, []string{"action", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "postgate_policy_request_duration_seconds",
			Help: "Time to decide one policy request, checks included.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
				25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10, 30},
		}),
		checkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_policy_check_errors_total",
			Help: "Checks that failed (error, panic or deadline) and were skipped.",
		}, []string{"check"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postgate_policy_connections",
			Help: "Open policy connections.",
		}),
		protocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_policy_protocol_errors_total",
			Help: "Protocol errors by kind (malformed, line_too_long, too_many_attributes, request_too_large, truncated, timeout, io, panic).",
		}, []string{"kind"}),
	}
	if reg != nil {
		m.requests = promreg.MustRegister(reg, m.requests)
		m.duration = promreg.MustRegister(reg, m.duration)
		m.checkErrors = promreg.MustRegister(reg, m.checkErrors)
		m.connections = promreg.MustRegister(reg, m.connections)
		m.protocolErrors = promreg.MustRegister(reg, m.protocolErrors)
	}
	return m
}
