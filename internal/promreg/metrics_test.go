package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterReusesExisting(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "postgate_test_total", Help: "test"}
	a := MustRegister(reg, prometheus.NewCounter(opts))
	b := MustRegister(reg, prometheus.NewCounter(opts))
	if a != b {
		t.Fatal("second registration did not return the first collector")
	}
	b.Inc()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("gathered %v, %v", mfs, err)
	}
	// Same name, other kind: an error, not a silent mix-up.
	if _, err := Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "postgate_test_total", Help: "test"})); err == nil {
		t.Fatal("a gauge registered over a counter of the same name")
	}
}
