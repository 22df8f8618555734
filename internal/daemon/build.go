package daemon

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/config"
	"postgate/internal/resolver"
	"postgate/policy/spf"
	"postgate/rbl"
)

// NewResolver builds the shared DNS resolver from the [dns] section. The
// operator commands (rbl check, dkim testkey) use it too, so they see what
// the daemon sees.
func NewResolver(c config.DNS, reg prometheus.Registerer, log *slog.Logger) (*resolver.DNS, error) {
	servers := make([]string, 0, len(c.Servers))
	for _, s := range c.Servers {
		hp, err := config.ParseDNSServer(s)
		if err != nil {
			return nil, err
		}
		servers = append(servers, hp)
	}
	if len(servers) == 0 {
		var err error
		if servers, err = resolver.ServersFromResolvConf(resolver.DefaultResolvConf); err != nil {
			return nil, fmt.Errorf("dns.servers is empty and %w", err)
		}
	}
	cacheSize := c.CacheSize
	if cacheSize == 0 {
		cacheSize = -1 // the resolver's "no cache"
	}
	return resolver.New(resolver.Options{
		Servers:    servers,
		Timeout:    c.Timeout.D(),
		CacheSize:  cacheSize,
		MaxTTL:     c.MaxTTL.D(),
		Registerer: reg,
		Logger:     log,
	})
}

// NewRBL builds the DNSBL checker and thresholds from the [rbl] section.
func NewRBL(cfg *config.Config, res resolver.Resolver, reg prometheus.Registerer, log *slog.Logger) (*rbl.Checker, rbl.Thresholds, error) {
	t := rbl.Thresholds{Reject: cfg.RBL.RejectScore, Greylist: cfg.RBL.GreylistScore, Allowlist: cfg.RBL.AllowlistScore}
	lists, err := rbl.ParseLists(cfg.RBL.Lists)
	if err != nil {
		return nil, t, err
	}
	c, err := rbl.New(rbl.Options{
		Lists:            lists,
		Resolver:         res,
		Timeout:          cfg.RBL.Timeout.D(),
		DQSKey:           rbl.Secret(cfg.RBL.DQSKey),
		FailureThreshold: cfg.RBL.FailureWarnAfter,
		WarnInterval:     cfg.RBL.WarnInterval.D(),
		Logger:           log,
		Registerer:       reg,
	})
	return c, t, err
}

// NewSPF builds the SPF checker and decision policy from the [spf] section.
// The receiver name defaults to this host's name.
func NewSPF(cfg *config.Config, res resolver.Resolver, hostname string, log *slog.Logger) (*spf.Checker, *spf.Policy, error) {
	p, err := cfg.SPF.Policy()
	if err != nil {
		return nil, nil, fmt.Errorf("spf: %w", err)
	}
	if p.ReceiverName == "" {
		p.ReceiverName = hostname
	}
	c := spf.New(spf.Options{
		Resolver:        res,
		Timeout:         cfg.SPF.Timeout.D(),
		LookupLimit:     cfg.SPF.LookupLimit,
		VoidLookupLimit: cfg.SPF.VoidLookupLimit,
		ReceiverName:    p.ReceiverName,
		Logger:          log,
	})
	return c, p, nil
}
