package daemon

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"postgate/greylist"
)

// registerStoreMetrics exports the greylist database's size and commit
// counters. They are read at scrape time from whichever store is open.
func registerStoreMetrics(reg prometheus.Registerer, store func() *greylist.BoltStore) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postgate_greylist_db_size_bytes",
			Help: "Size of the greylist database file.",
		}, func() float64 {
			s := store()
			if s == nil {
				return 0
			}
			st, err := os.Stat(s.Path())
			if err != nil {
				return 0
			}
			return float64(st.Size())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "postgate_greylist_db_commits_total",
			Help: "Write transactions committed to the greylist database (group commits).",
		}, func() float64 {
			if s := store(); s != nil {
				c, _ := s.CommitStats()
				return float64(c)
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "postgate_greylist_db_operations_total",
			Help: "Greylist updates written; divided by commits it is the mean group-commit batch.",
		}, func() float64 {
			if s := store(); s != nil {
				_, n := s.CommitStats()
				return float64(n)
			}
			return 0
		}),
	)
}
