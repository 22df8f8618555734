// Package daemon assembles postgate from its configuration: it opens the
// state, builds the policy pipeline (and later the milter), opens the
// listeners, and swaps in a freshly built pipeline on reload. It holds no mail
// logic of its own; that lives in the packages it wires.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"postgate/dkim"
	"postgate/greylist"
	"postgate/internal/admin"
	"postgate/internal/config"
	"postgate/internal/listen"
	"postgate/internal/resolver"
	"postgate/internal/version"
	"postgate/milter"
	"postgate/policy"
)

// Daemon is a running postgate.
type Daemon struct {
	log   *slog.Logger
	level *slog.LevelVar
	reg   *prometheus.Registry

	policyMetrics  *policy.Metrics
	headers        *policy.HeaderCache
	policySrv      *policy.Server
	milterSrv      *milter.Server
	systemHostname string

	mu          sync.Mutex // serialises Reload and Shutdown
	cfg         *config.Config
	store       atomic.Pointer[storeRef] // read by metrics and health without the lock
	greylister  atomic.Pointer[greylist.Greylister]
	stopSweeper context.CancelFunc
	resolver    *resolver.DNS
	dnsConfig   config.DNS

	listeners []net.Listener
	adminSrv  *http.Server
	serving   sync.WaitGroup
}

// New builds a daemon from cfg: everything is loaded and checked, the
// database opened and the listeners bound, but nothing is served yet.
func New(cfg *config.Config, log *slog.Logger, level *slog.LevelVar) (*Daemon, error) {
	d := &Daemon{log: log, level: level, reg: prometheus.NewRegistry(), cfg: cfg}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.policyMetrics = policy.NewMetrics(d.reg)
	d.headers = policy.NewHeaderCache(0, 0, nil)
	d.systemHostname, _ = os.Hostname()
	registerStoreMetrics(d.reg, func() *greylist.BoltStore {
		if s := d.store.Load(); s != nil {
			b, _ := s.Store.(*greylist.BoltStore)
			return b
		}
		return nil
	})

	if cfg.Greylist.Enabled {
		if err := d.openStore(cfg); err != nil {
			return nil, err
		}
	}
	rt, err := d.build(cfg)
	if err != nil {
		d.closeStore()
		return nil, err
	}
	d.policySrv = policy.NewServer(rt.pipeline, policy.ServerOptions{
		IdleTimeout: cfg.Policy.IdleTimeout.D(),
		Logger:      log,
		Metrics:     d.policyMetrics,
	})
	if len(cfg.Milter.Listen) > 0 {
		mo := rt.milter
		mo.Registerer = d.reg
		if d.milterSrv, err = milter.NewServer(mo); err != nil {
			d.closeStore()
			return nil, fmt.Errorf("milter: %w", err)
		}
	}
	if err := d.install(rt); err != nil {
		d.closeStore()
		return nil, err
	}

	for _, a := range cfg.Policy.Listen {
		l, err := listen.Listen(a.Network, a.Address, listen.Options{Mode: os.FileMode(cfg.Policy.SocketMode), Group: cfg.Policy.SocketGroup})
		if err != nil {
			d.closeListeners()
			d.closeStore()
			return nil, err
		}
		d.listeners = append(d.listeners, l)
	}
	for _, a := range cfg.Milter.Listen {
		l, err := listen.Listen(a.Network, a.Address, listen.Options{Mode: os.FileMode(cfg.Milter.SocketMode), Group: cfg.Milter.SocketGroup})
		if err != nil {
			d.closeListeners()
			d.closeStore()
			return nil, err
		}
		d.listeners = append(d.listeners, milterListener{l})
	}
	if cfg.Admin.Listen != "" {
		l, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			d.closeListeners()
			d.closeStore()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		d.adminSrv = &http.Server{
			Handler:           admin.Handler(d.reg, d.greylister.Load, d.health),
			ReadHeaderTimeout: 10 * time.Second,
		}
		d.listeners = append(d.listeners, adminListener{l})
	}
	return d, nil
}

// adminListener and milterListener mark those listeners among the policy ones.
type adminListener struct{ net.Listener }
type milterListener struct{ net.Listener }

// Addrs returns the bound addresses of the policy listeners then the admin
// listener (tests use port 0).
func (d *Daemon) Addrs() []net.Addr {
	var out []net.Addr
	for _, l := range d.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// Serve starts serving on every listener and returns at once.
func (d *Daemon) Serve() {
	for _, l := range d.listeners {
		d.serving.Add(1)
		go func() {
			defer d.serving.Done()
			var err error
			switch l := l.(type) {
			case adminListener:
				err = d.adminSrv.Serve(l.Listener)
				if errors.Is(err, http.ErrServerClosed) {
					err = nil
				}
			case milterListener:
				err = d.milterSrv.Serve(l.Listener)
				if errors.Is(err, milter.ErrServerClosed) {
					err = nil
				}
			default:
				err = d.policySrv.Serve(l)
				if errors.Is(err, policy.ErrServerClosed) {
					err = nil
				}
			}
			if err != nil {
				d.log.Error("listener failed", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	d.log.Info("postgate started", "version", version.Version, "config", configName(d.cfg), "listen", fmt.Sprint(d.Addrs()))
}

// runtime is everything built from one configuration that a reload replaces.
type runtime struct {
	pipeline   *policy.Pipeline
	greylister *greylist.Greylister
	resolver   *resolver.DNS
	dnsConfig  config.DNS
	milter     milter.Options
}

// build constructs a runtime from cfg without touching the running one, so a
// reload either fully succeeds or changes nothing.
func (d *Daemon) build(cfg *config.Config) (*runtime, error) {
	f, err := loadFiles(cfg)
	if err != nil {
		return nil, err
	}
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = d.systemHostname
	}
	rt := &runtime{resolver: d.resolver, dnsConfig: cfg.DNS}
	// The DNS cache survives a reload unless the DNS settings change.
	if rt.resolver == nil || !reflect.DeepEqual(cfg.DNS, d.dnsConfig) {
		if rt.resolver, err = NewResolver(cfg.DNS, d.reg, d.log); err != nil {
			return nil, err
		}
	}
	var checks []policy.Check
	greylistOnlyWhenRequired := false
	if len(cfg.RBL.Lists) > 0 {
		c, t, err := NewRBL(cfg, rt.resolver, d.reg, d.log)
		if err != nil {
			return nil, err
		}
		checks = append(checks, policy.NewRBLCheck(c, t))
		greylistOnlyWhenRequired = !t.GreylistsByDefault()
	}
	if cfg.SPF.Enabled {
		c, p, err := NewSPF(cfg, rt.resolver, hostname, d.log)
		if err != nil {
			return nil, err
		}
		checks = append(checks, policy.NewSPFCheck(c, p))
	}
	if cfg.Greylist.Enabled {
		gc := GreylistConfig(cfg.Greylist)
		gc.Logger = d.log
		rt.greylister = greylist.New(d.store.Load().Store, gc, f.whitelist, nil)
		checks = append(checks, policy.NewGreylistCheck(rt.greylister, policy.GreylistOptions{
			DeferText: cfg.Greylist.DeferText,
			Header:    cfg.Greylist.Header,
			Hostname:  hostname,

			OnlyWhenRequired: greylistOnlyWhenRequired,
		}))
	}
	rt.milter = milterOptions(cfg, f.keyring, rt.resolver, hostname, d.log)
	rt.pipeline = policy.NewPipeline(policy.PipelineOptions{
		TrustedNetworks: cfg.Policy.TrustedNetworks,
		CheckTimeout:    cfg.Policy.CheckTimeout.D(),
		Logger:          d.log,
		Metrics:         d.policyMetrics,
		Headers:         d.headers,
	}, checks...)
	return rt, nil
}

// files is what a configuration names besides itself: list and key files.
type files struct {
	whitelist *greylist.Whitelist
	keyring   *dkim.Keyring
}

// loadFiles reads and checks every file cfg names, reporting all errors.
func loadFiles(cfg *config.Config) (*files, error) {
	f := &files{}
	var errs []error
	if cfg.Greylist.Enabled {
		wl, err := greylist.LoadWhitelist(cfg.Greylist.WhitelistClients, cfg.Greylist.WhitelistRecipients)
		if err != nil {
			errs = append(errs, err)
		}
		f.whitelist = wl
	}
	kr, err := LoadKeyring(cfg.DKIM)
	if err != nil {
		errs = append(errs, err)
	}
	f.keyring = kr
	return f, errors.Join(errs...)
}

// CheckFiles loads every list and key file cfg names, exactly as a reload
// would, without opening sockets or the database (postgate check-config).
func CheckFiles(cfg *config.Config) error {
	_, err := loadFiles(cfg)
	return err
}

// install makes rt the runtime in force.
func (d *Daemon) install(rt *runtime) error {
	if d.milterSrv != nil {
		if err := d.milterSrv.SetOptions(rt.milter); err != nil {
			return fmt.Errorf("milter: %w", err)
		}
	}
	d.resolver, d.dnsConfig = rt.resolver, rt.dnsConfig
	d.policySrv.SetPipeline(rt.pipeline)
	d.greylister.Store(rt.greylister)
	if d.stopSweeper != nil {
		d.stopSweeper()
		d.stopSweeper = nil
	}
	// Redis expires entries by key TTLs; a sweep there would make every
	// host scan the whole shared keyspace.
	if s := d.store.Load(); rt.greylister != nil && s != nil && s.cfg.Store != "redis" {
		ctx, cancel := context.WithCancel(context.Background())
		d.stopSweeper = cancel
		go rt.greylister.RunSweeper(ctx)
	}
	return nil
}

// Reload re-reads the configuration file and every file it names. Everything
// is built before anything is swapped: on any error the running
// configuration stays in force and every error is logged.
func (d *Daemon) Reload(path string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	cfg, err := loadConfig(path)
	if err == nil {
		err = d.checkRestartOnly(cfg)
	}
	if err == nil && cfg.Greylist.Enabled && d.store.Load() == nil {
		err = d.openStore(cfg)
	}
	var rt *runtime
	if err == nil {
		rt, err = d.build(cfg)
	}
	if err != nil {
		logErrors(d.log, "reload failed, keeping the running configuration", err)
		return err
	}
	if err := d.install(rt); err != nil {
		logErrors(d.log, "reload failed, keeping the running configuration", err)
		return err
	}
	d.cfg = cfg
	if d.level != nil {
		d.level.Set(parseLevel(cfg.Log.Level))
	}
	d.log.Info("reloaded", "config", configName(cfg), "duration", time.Since(start).Round(time.Microsecond))
	return nil
}

// checkRestartOnly refuses changes a reload cannot apply: sockets and the
// database stay open across reloads, so Postfix never sees a gap.
func (d *Daemon) checkRestartOnly(cfg *config.Config) error {
	var errs []error
	if fmt.Sprint(cfg.Policy.Listen) != fmt.Sprint(d.cfg.Policy.Listen) ||
		cfg.Policy.SocketMode != d.cfg.Policy.SocketMode || cfg.Policy.SocketGroup != d.cfg.Policy.SocketGroup {
		errs = append(errs, errors.New("policy.listen/socket_mode/socket_group changed: restart postgate to apply"))
	}
	if cfg.Admin.Listen != d.cfg.Admin.Listen {
		errs = append(errs, errors.New("admin.listen changed: restart postgate to apply"))
	}
	if s := d.store.Load(); s != nil && (cfg.Greylist.Store != s.cfg.Store || cfg.Greylist.DB != s.cfg.DB ||
		!reflect.DeepEqual(cfg.Greylist.Redis, s.cfg.Redis)) {
		errs = append(errs, errors.New("greylist.store/db/redis changed: restart postgate to apply"))
	}
	if fmt.Sprint(cfg.Milter.Listen) != fmt.Sprint(d.cfg.Milter.Listen) ||
		cfg.Milter.SocketMode != d.cfg.Milter.SocketMode || cfg.Milter.SocketGroup != d.cfg.Milter.SocketGroup {
		errs = append(errs, errors.New("milter.listen/socket_mode/socket_group changed: restart postgate to apply"))
	}
	if cfg.Log.Format != d.cfg.Log.Format {
		errs = append(errs, errors.New("log.format changed: restart postgate to apply"))
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting, lets in-flight requests finish (until ctx ends),
// and closes the database cleanly.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if err := d.policySrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("policy server: %w", err))
	}
	if d.milterSrv != nil {
		if err := d.milterSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("milter: %w", err))
		}
	}
	if d.adminSrv != nil {
		if err := d.adminSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin server: %w", err))
		}
	}
	d.serving.Wait()
	if d.stopSweeper != nil {
		d.stopSweeper()
	}
	if err := d.closeStore(); err != nil {
		errs = append(errs, fmt.Errorf("greylist database: %w", err))
	}
	d.log.Info("postgate stopped")
	return errors.Join(errs...)
}

// storeRef is the open greylist store and the section it was opened from.
type storeRef struct {
	greylist.Store
	cfg config.Greylist
}

func (d *Daemon) openStore(cfg *config.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := OpenGreylistStore(ctx, cfg.Greylist, time.Second, d.reg, d.log)
	if err != nil {
		return err
	}
	d.store.Store(&storeRef{Store: s, cfg: cfg.Greylist})
	return nil
}

func (d *Daemon) closeStore() error {
	s := d.store.Swap(nil)
	if s == nil {
		return nil
	}
	return s.Close()
}

func (d *Daemon) closeListeners() {
	for _, l := range d.listeners {
		l.Close()
	}
	d.listeners = nil
}

// health is what /healthz reports: the greylist database must answer a read.
func (d *Daemon) health(ctx context.Context) error {
	s := d.store.Load()
	if s == nil || d.greylister.Load() == nil {
		return nil
	}
	return s.View(ctx, greylist.Triplets, []byte("healthz"), func([]byte) error { return nil })
}

func configName(c *config.Config) string {
	if c.File == "" {
		return "(embedded default)"
	}
	return c.File
}
