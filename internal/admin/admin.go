// Package admin is postgate's HTTP admin API: /metrics, /healthz and the
// greylist operations behind `postgate greylist ...`. The daemon holds the
// bbolt lock, so while it runs the CLI goes through this API; when it is
// stopped the CLI opens the database itself. Both sides use GreylistAdmin, so
// the CLI cannot tell the difference.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"postgate/greylist"
)

// GreylistAdmin is what an operator can do to the greylist state.
// *greylist.Greylister implements it directly; *Client over HTTP.
type GreylistAdmin interface {
	Stats(ctx context.Context) (greylist.Stats, error)
	ListTriplets(ctx context.Context, o greylist.ListOptions) ([]greylist.TripletEntry, error)
	ListClients(ctx context.Context, o greylist.ListOptions) ([]greylist.ClientEntry, error)
	DeleteTriplets(ctx context.Context, f greylist.TripletFilter) (int, error)
	DeleteClient(ctx context.Context, ip netip.Addr) (bool, error)
	WhitelistClient(ctx context.Context, ip netip.Addr) error
}

var _ GreylistAdmin = (*greylist.Greylister)(nil)

// Handler serves the admin API. greylister returns the greylister in force
// (it changes on reload), or nil when greylisting is disabled. health returns
// nil when the daemon is fit to answer.
func Handler(gatherer prometheus.Gatherer, greylister func() *greylist.Greylister, health func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	// Profiles, for the numbers in docs/performance.md and for operators
	// chasing a slow decision. The admin listener is loopback-only.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := health(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})

	gl := func(h func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			g := greylister()
			if g == nil {
				writeError(w, http.StatusNotFound, errors.New("greylisting is disabled"))
				return
			}
			v, err := h(w, r, g)
			if err != nil {
				status := http.StatusInternalServerError
				var be badRequest
				if errors.As(err, &be) || errors.Is(err, greylist.ErrPrivacy) {
					status = http.StatusBadRequest
				}
				writeError(w, status, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		}
	}
	mux.HandleFunc("GET /greylist/stats", gl(func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error) {
		return g.Stats(r.Context())
	}))
	mux.HandleFunc("GET /greylist/triplets", gl(func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error) {
		o, err := listOptions(r)
		if err != nil {
			return nil, err
		}
		return g.ListTriplets(r.Context(), o)
	}))
	mux.HandleFunc("GET /greylist/clients", gl(func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error) {
		o, err := listOptions(r)
		if err != nil {
			return nil, err
		}
		return g.ListClients(r.Context(), o)
	}))
	mux.HandleFunc("DELETE /greylist/triplets", gl(func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error) {
		q := r.URL.Query()
		f := greylist.TripletFilter{
			Network:   q.Get("network"),
			Sender:    q.Get("sender"),
			SenderSet: q.Has("sender"),
			Recipient: q.Get("recipient"),
		}
		n, err := g.DeleteTriplets(r.Context(), f)
		return map[string]int{"deleted": n}, err
	}))
	mux.HandleFunc("DELETE /greylist/clients/{ip}", gl(func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error) {
		ip, err := pathIP(r)
		if err != nil {
			return nil, err
		}
		ok, err := g.DeleteClient(r.Context(), ip)
		return map[string]bool{"deleted": ok}, err
	}))
	mux.HandleFunc("PUT /greylist/whitelist/{ip}", gl(func(w http.ResponseWriter, r *http.Request, g *greylist.Greylister) (any, error) {
		ip, err := pathIP(r)
		if err != nil {
			return nil, err
		}
		return map[string]bool{"whitelisted": true}, g.WhitelistClient(r.Context(), ip)
	}))
	return mux
}

type badRequest struct{ error }

func listOptions(r *http.Request) (greylist.ListOptions, error) {
	q := r.URL.Query()
	o := greylist.ListOptions{Prefix: q.Get("prefix"), Contains: q.Get("contains")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return o, badRequest{fmt.Errorf("bad limit %q", s)}
		}
		o.Limit = n
	}
	return o, nil
}

func pathIP(r *http.Request) (netip.Addr, error) {
	ip, err := netip.ParseAddr(r.PathValue("ip"))
	if err != nil {
		return ip, badRequest{fmt.Errorf("bad client address %q", r.PathValue("ip"))}
	}
	return ip, nil
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{err.Error()})
}
