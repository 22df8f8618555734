package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

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

// OpenGreylistStore opens the store the [greylist] section names: the bbolt
// file, or Redis. lockTimeout bounds the wait for bbolt's file lock (a
// running daemon holds it).
func OpenGreylistStore(ctx context.Context, c config.Greylist, lockTimeout time.Duration, reg prometheus.Registerer, log *slog.Logger) (greylist.Store, error) {
	if c.Store != "redis" {
		s, err := greylist.OpenBolt(c.DB, greylist.BoltOptions{Timeout: lockTimeout, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("greylist database %s: %w", c.DB, err)
		}
		return s, nil
	}
	o, err := RedisOptions(c.Redis)
	if err != nil {
		return nil, err
	}
	o.TTL = GreylistConfig(c).KeyTTL()
	o.Registerer = reg
	o.Logger = log
	redis.SetLogger(redisLogger{log})
	s, err := greylist.OpenRedis(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("greylist redis %v: %w", c.Redis.Addrs, err)
	}
	return s, nil
}

// RedisOptions turns [greylist.redis] into the store's options.
func RedisOptions(c config.Redis) (greylist.RedisOptions, error) {
	o := greylist.RedisOptions{
		Addrs:       c.Addrs,
		MasterName:  c.MasterName,
		Username:    c.Username,
		Password:    c.Password,
		DB:          c.DB,
		KeyPrefix:   c.KeyPrefix,
		DialTimeout: c.DialTimeout.D(),
		Timeout:     c.Timeout.D(),
	}
	if c.TLS {
		tc := &tls.Config{ServerName: c.TLSServer, MinVersion: tls.VersionTLS12}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return o, err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return o, fmt.Errorf("%s: no PEM certificate", c.TLSCAFile)
			}
		}
		o.TLS = tc
	}
	return o, nil
}

// OpenStoreSpec opens a greylist store named on the command line:
// "bbolt:PATH", or a Redis URL "redis://[user:password@]host:port/db"
// ("rediss://" for TLS). Key prefix and TTLs come from c.
func OpenStoreSpec(ctx context.Context, spec string, c config.Greylist, log *slog.Logger) (greylist.Store, error) {
	if path, ok := strings.CutPrefix(spec, "bbolt:"); ok {
		c.Store, c.DB = "bbolt", path
		return OpenGreylistStore(ctx, c, time.Second, nil, log)
	}
	if !strings.HasPrefix(spec, "redis://") && !strings.HasPrefix(spec, "rediss://") {
		return nil, fmt.Errorf("store %q: want bbolt:PATH or redis://host:port/db", spec)
	}
	u, err := redis.ParseURL(spec)
	if err != nil {
		return nil, fmt.Errorf("store %q: %w", spec, err)
	}
	o, err := RedisOptions(c.Redis)
	if err != nil {
		return nil, err
	}
	o.Addrs, o.MasterName = []string{u.Addr}, ""
	o.Username, o.Password, o.DB, o.TLS = u.Username, u.Password, u.DB, u.TLSConfig
	o.TTL = GreylistConfig(c).KeyTTL()
	o.Logger = log
	return greylist.OpenRedis(ctx, o)
}

// redisLogger sends go-redis's own messages (dial failures while Redis is
// down) to the daemon's log instead of the process's stderr.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Warn("greylist redis client", "msg", fmt.Sprintf(format, v...))
}
