package milter

import (
	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/promreg"
)

type metrics struct {
	messages    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	connections prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_milter_messages_total",
			Help: "Messages seen by the DKIM milter, by mode (sign, verify) and result (signed, sign_error, or the DKIM result of a verified message: pass, fail, none, temperror, ...; aborted).",
		}, []string{"mode", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "postgate_milter_message_duration_seconds",
			Help:    "Time from the first header to the end-of-message reply, by mode.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"mode"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postgate_milter_connections",
			Help: "MTA connections open to the DKIM milter.",
		}),
	}
	if reg != nil {
		m.messages = promreg.MustRegister(reg, m.messages)
		m.duration = promreg.MustRegister(reg, m.duration)
		m.connections = promreg.MustRegister(reg, m.connections)
	}
	return m
}
