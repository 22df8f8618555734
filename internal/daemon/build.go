package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"postgate/dkim"
	"postgate/greylist"
	"postgate/internal/config"
	"postgate/internal/resolver"
	"postgate/milter"
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

// LoadKeyring loads the signing keys the [dkim] section names: a KeyList,
// OpenDKIM's tables, or nothing (nil: verify only).
func LoadKeyring(c config.DKIM) (*dkim.Keyring, error) {
	opts := dkim.LoadOptions{AllowGroupReadable: c.AllowGroupReadableKeys}
	switch {
	case c.KeyList != "":
		return dkim.LoadKeyList(c.KeyList, opts)
	case c.SigningTable != "":
		return dkim.LoadKeyTables(c.SigningTable, c.KeyTable, opts)
	}
	return nil, nil
}

// SignOptions and VerifyOptions turn the [dkim] section into the dkim
// package's options; the CLI's sign/verify use them too.
func SignOptions(c config.DKIM) *dkim.SignOptions {
	return &dkim.SignOptions{Canonicalization: c.Canonicalization, SignedHeaders: c.SignedHeaders, OversignedHeaders: c.OversignedHeaders}
}

func VerifyOptions(c config.DKIM, res resolver.Resolver, log *slog.Logger) *dkim.VerifyOptions {
	return &dkim.VerifyOptions{Resolver: res, Timeout: c.DNSTimeout.D(), MaxVerifications: c.MaxVerifications, Logger: log}
}

// milterOptions builds the milter's options from cfg and loaded keys.
func milterOptions(cfg *config.Config, kr *dkim.Keyring, res resolver.Resolver, hostname string, log *slog.Logger) milter.Options {
	action := func(s string) milter.Action { a, _ := milter.ParseAction(s); return a }
	authserv := cfg.DKIM.AuthservID
	if authserv == "" {
		authserv = hostname
	}
	return milter.Options{
		Keyring:            kr,
		SignOptions:        SignOptions(cfg.DKIM),
		VerifyOptions:      VerifyOptions(cfg.DKIM, res, log),
		AuthservID:         authserv,
		InternalNetworks:   append([]netip.Prefix{}, cfg.Milter.InternalNetworks...),
		OriginatingDaemons: append([]string{}, cfg.Milter.OriginatingDaemons...),
		Verdicts: map[dkim.Status]milter.Action{
			dkim.StatusFail:      action(cfg.DKIM.OnFail),
			dkim.StatusPermError: action(cfg.DKIM.OnPermError),
			dkim.StatusTempError: action(cfg.DKIM.OnTempError),
			dkim.StatusNone:      action(cfg.DKIM.OnUnsigned),
		},
		Logger:       log,
		ReadTimeout:  cfg.Milter.ReadTimeout.D(),
		WriteTimeout: cfg.Milter.WriteTimeout.D(),
	}
}

// GreylistConfig turns the [greylist] section into the greylisting policy;
// the offline `postgate greylist` commands use it too.
func GreylistConfig(c config.Greylist) greylist.Config {
	return greylist.Config{
		Delay:              c.Delay.D(),
		RetryWindow:        c.RetryWindow.D(),
		MaxAge:             c.MaxAge.D(),
		AutoWhitelistAfter: c.AutoWhitelistAfter,
		IPv4Prefix:         c.IPv4Prefix,
		IPv6Prefix:         c.IPv6Prefix,
		Privacy:            c.Privacy,
		SweepInterval:      c.SweepInterval.D(),
	}
}
