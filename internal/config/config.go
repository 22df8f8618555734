// Package config loads postgate's one TOML file. Loading is strict: unknown keys,
// wrong types, bad durations and missing files are errors, and every error of a
// file is reported at once as FILE:LINE: key: message.
//
// The defaults live in Default; configs/postgate.toml documents every key with
// its default and a test keeps the two identical.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"postgate/dkim"
	"postgate/milter"
	"postgate/policy/spf"
	"postgate/rbl"
)

// Config is the whole daemon configuration.
type Config struct {
	// Hostname names this host in the headers postgate writes (X-Greylist,
	// Received-SPF receiver=, the Authentication-Results authserv-id unless
	// set in their sections); "" = the system's host name. Set it to
	// Postfix's myhostname.
	Hostname string `toml:"hostname"`

	Log      Log      `toml:"log"`
	Policy   Policy   `toml:"policy"`
	DNS      DNS      `toml:"dns"`
	Greylist Greylist `toml:"greylist"`
	SPF      SPF      `toml:"spf"`
	RBL      RBL      `toml:"rbl"`
	Milter   Milter   `toml:"milter"`
	DKIM     DKIM     `toml:"dkim"`
	Admin    Admin    `toml:"admin"`

	// File is where the configuration came from ("" for the embedded default).
	File string `toml:"-"`
}

type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

type Policy struct {
	Listen          []ListenAddr   `toml:"listen"`
	SocketMode      FileMode       `toml:"socket_mode"`
	SocketGroup     string         `toml:"socket_group"`
	TrustedNetworks []netip.Prefix `toml:"trusted_networks"`
	IdleTimeout     Duration       `toml:"idle_timeout"`
	CheckTimeout    Duration       `toml:"check_timeout"`
}

type DNS struct {
	Servers   []string `toml:"servers"`
	Timeout   Duration `toml:"timeout"`
	CacheSize int      `toml:"cache_size"`
	MaxTTL    Duration `toml:"max_ttl"`
}

type Greylist struct {
	Enabled             bool     `toml:"enabled"`
	Store               string   `toml:"store"`
	Delay               Duration `toml:"delay"`
	RetryWindow         Duration `toml:"retry_window"`
	MaxAge              Duration `toml:"max_age"`
	AutoWhitelistAfter  int      `toml:"auto_whitelist_after"`
	DB                  string   `toml:"db"`
	WhitelistClients    []string `toml:"whitelist_clients"`
	WhitelistRecipients []string `toml:"whitelist_recipients"`
	IPv4Prefix          int      `toml:"ipv4_prefix"`
	IPv6Prefix          int      `toml:"ipv6_prefix"`
	Privacy             bool     `toml:"privacy"`
	DeferText           string   `toml:"defer_text"`
	Header              bool     `toml:"header"`
	SweepInterval       Duration `toml:"sweep_interval"`
	Redis               Redis    `toml:"redis"`
}

// Redis is where several postgate hosts share one greylist ([greylist.redis]).
type Redis struct {
	Addrs       []string `toml:"addrs"`
	MasterName  string   `toml:"master_name"`
	Username    string   `toml:"username"`
	Password    string   `toml:"password"`
	DB          int      `toml:"db"`
	TLS         bool     `toml:"tls"`
	TLSCAFile   string   `toml:"tls_ca_file"`
	TLSServer   string   `toml:"tls_server_name"`
	KeyPrefix   string   `toml:"key_prefix"`
	DialTimeout Duration `toml:"dial_timeout"`
	Timeout     Duration `toml:"timeout"`
}

type SPF struct {
	Enabled            bool           `toml:"enabled"`
	HeloReject         bool           `toml:"helo_reject"`
	Timeout            Duration       `toml:"timeout"`
	LookupLimit        int            `toml:"lookup_limit"`
	VoidLookupLimit    int            `toml:"void_lookup_limit"`
	Header             string         `toml:"header"`
	Receiver           string         `toml:"receiver"`
	HideReceiver       bool           `toml:"hide_receiver"`
	DefaultExplanation string         `toml:"default_explanation"`
	SkipClients        []netip.Prefix `toml:"skip_clients"`
	SkipHelos          []string       `toml:"skip_helos"`
	WhitelistDomains   []string       `toml:"whitelist_domains"`
	GreylistWaivePass  bool           `toml:"greylist_waive_pass"`
	GreylistWaiveDoms  []string       `toml:"greylist_waive_pass_domains"`
	GreylistRequire    []string       `toml:"greylist_require"`
	GreylistPoolAware  bool           `toml:"greylist_pass_origin"`
	MailFrom           SPFActions     `toml:"mailfrom"`
	Helo               SPFActions     `toml:"helo"`
}

// SPFActions is what to do with each SPF result of one identity: "accept"
// (add the header), "reject" or "defer".
type SPFActions struct {
	Pass      string `toml:"pass"`
	Fail      string `toml:"fail"`
	SoftFail  string `toml:"softfail"`
	Neutral   string `toml:"neutral"`
	None      string `toml:"none"`
	PermError string `toml:"permerror"`
	TempError string `toml:"temperror"`
}

type RBL struct {
	Lists            []string `toml:"lists"`
	RejectScore      int      `toml:"reject_score"`
	GreylistScore    int      `toml:"greylist_score"`
	AllowlistScore   int      `toml:"allowlist_score"`
	DQSKey           string   `toml:"dqs_key"`
	Timeout          Duration `toml:"timeout"`
	FailureWarnAfter int      `toml:"failure_warn_after"`
	WarnInterval     Duration `toml:"warn_interval"`
}

type Milter struct {
	Listen             []ListenAddr   `toml:"listen"`
	SocketMode         FileMode       `toml:"socket_mode"`
	SocketGroup        string         `toml:"socket_group"`
	InternalNetworks   []netip.Prefix `toml:"internal_networks"`
	OriginatingDaemons []string       `toml:"originating_daemons"`
	ReadTimeout        Duration       `toml:"read_timeout"`
	WriteTimeout       Duration       `toml:"write_timeout"`
}

type DKIM struct {
	KeyList                string   `toml:"keylist"`
	SigningTable           string   `toml:"signing_table"`
	KeyTable               string   `toml:"key_table"`
	AuthservID             string   `toml:"authserv_id"`
	Canonicalization       string   `toml:"canonicalization"`
	SignedHeaders          []string `toml:"signed_headers"`
	OversignedHeaders      []string `toml:"oversigned_headers"`
	AllowGroupReadableKeys bool     `toml:"allow_group_readable_keys"`
	MaxVerifications       int      `toml:"max_verifications"`
	DNSTimeout             Duration `toml:"dns_timeout"`
	OnFail                 string   `toml:"on_fail"`
	OnPermError            string   `toml:"on_permerror"`
	OnTempError            string   `toml:"on_temperror"`
	OnUnsigned             string   `toml:"on_unsigned"`
}

type Admin struct {
	Listen string `toml:"listen"` // host:port of the HTTP admin API; "" disables it
}

// Default returns the configuration used for every key a file leaves out.
func Default() *Config {
	return &Config{
		Log: Log{Level: "info", Format: "text"},
		Policy: Policy{
			Listen:          []ListenAddr{{Network: "tcp", Address: "127.0.0.1:10040"}},
			SocketMode:      0o660,
			TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			IdleTimeout:     Duration(300 * time.Second),
			CheckTimeout:    Duration(10 * time.Second),
		},
		DNS: DNS{
			Servers:   []string{},
			Timeout:   Duration(2 * time.Second),
			CacheSize: 10000,
			MaxTTL:    Duration(time.Hour),
		},
		Greylist: Greylist{
			Enabled:             true,
			Store:               "bbolt",
			Delay:               Duration(5 * time.Minute),
			RetryWindow:         Duration(48 * time.Hour),
			MaxAge:              Duration(35 * 24 * time.Hour),
			AutoWhitelistAfter:  5,
			DB:                  "/var/lib/postgate/greylist.db",
			WhitelistClients:    []string{},
			WhitelistRecipients: []string{},
			IPv4Prefix:          24,
			IPv6Prefix:          64,
			DeferText:           "Greylisted, please try again in %s seconds",
			Header:              true,
			SweepInterval:       Duration(time.Hour),
			Redis: Redis{
				Addrs:       []string{"127.0.0.1:6379"},
				KeyPrefix:   "postgate:greylist:",
				DialTimeout: Duration(time.Second),
				Timeout:     Duration(250 * time.Millisecond),
			},
		},
		SPF: SPF{
			Enabled:            true,
			Timeout:            Duration(20 * time.Second),
			LookupLimit:        10,
			VoidLookupLimit:    2,
			Header:             "received-spf",
			DefaultExplanation: "SPF validation failed: %{c} is not allowed to send mail for %{d}",
			SkipClients:        []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			SkipHelos:          []string{},
			WhitelistDomains:   []string{},
			GreylistWaiveDoms:  []string{},
			GreylistRequire:    []string{},
			GreylistPoolAware:  true,
			MailFrom:           SPFActions{Pass: "accept", Fail: "reject", SoftFail: "accept", Neutral: "accept", None: "accept", PermError: "accept", TempError: "accept"},
			Helo:               SPFActions{Pass: "accept", Fail: "accept", SoftFail: "accept", Neutral: "accept", None: "accept", PermError: "accept", TempError: "accept"},
		},
		RBL: RBL{
			Lists:            []string{},
			RejectScore:      3,
			GreylistScore:    0,
			AllowlistScore:   -1,
			Timeout:          Duration(5 * time.Second),
			FailureWarnAfter: 5,
			WarnInterval:     Duration(10 * time.Minute),
		},
		Milter: Milter{
			Listen:             []ListenAddr{{Network: "tcp", Address: "127.0.0.1:8892"}},
			SocketMode:         0o660,
			InternalNetworks:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			OriginatingDaemons: []string{"ORIGINATING"},
			ReadTimeout:        Duration(10 * time.Minute),
			WriteTimeout:       Duration(time.Minute),
		},
		DKIM: DKIM{
			Canonicalization:  "relaxed/relaxed",
			SignedHeaders:     slices.Clone(dkim.DefaultSignedHeaders),
			OversignedHeaders: slices.Clone(dkim.DefaultOversignedHeaders),
			MaxVerifications:  5,
			DNSTimeout:        Duration(5 * time.Second),
			OnFail:            "accept",
			OnPermError:       "accept",
			OnTempError:       "accept",
			OnUnsigned:        "accept",
		},
		Admin: Admin{Listen: "127.0.0.1:10041"},
	}
}

// Local is the embedded configuration `postgate serve` runs with when no file
// is given: the defaults, with state kept under dir so no root is needed.
func Local(dir string) *Config {
	c := Default()
	c.Greylist.DB = filepath.Join(dir, "greylist.db")
	return c
}

// Load reads, decodes and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: err.Error()}}
	}
	return Parse(path, data)
}

// Parse decodes and validates data as if read from file. Relative paths in the
// file are taken relative to the file's directory, so a config and its list
// files can move together.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	el := &errorList{file: file}
	decodeFile(file, data, c, el)
	if len(el.errs) > 0 && el.lines == nil {
		return nil, el.err() // syntax error: nothing more can be said
	}
	c.File = file
	c.resolvePaths(filepath.Dir(file))
	c.validate(el)
	if err := el.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks an already built configuration (such as Local's) with the
// same rules as a loaded file.
func (c *Config) Validate() error {
	el := &errorList{file: c.File}
	if el.file == "" {
		el.file = "(embedded default)"
	}
	c.validate(el)
	return el.err()
}

func (c *Config) resolvePaths(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c.Greylist.DB = abs(c.Greylist.DB)
	c.Greylist.Redis.TLSCAFile = abs(c.Greylist.Redis.TLSCAFile)
	c.DKIM.KeyList = abs(c.DKIM.KeyList)
	c.DKIM.KeyTable = abs(c.DKIM.KeyTable)
	if t, ok := strings.CutPrefix(c.DKIM.SigningTable, "refile:"); ok {
		c.DKIM.SigningTable = "refile:" + abs(t)
	} else {
		c.DKIM.SigningTable = abs(c.DKIM.SigningTable)
	}
	for i, p := range c.Greylist.WhitelistClients {
		c.Greylist.WhitelistClients[i] = abs(p)
	}
	for i, p := range c.Greylist.WhitelistRecipients {
		c.Greylist.WhitelistRecipients[i] = abs(p)
	}
}

func (c *Config) validate(el *errorList) {
	if strings.ContainsAny(c.Hostname, " \t;()\"\r\n") {
		el.add("hostname", "not a host name: %q", c.Hostname)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		el.add("log.level", "must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		el.add("log.format", "must be text or json; got %q", c.Log.Format)
	}

	if len(c.Policy.Listen) == 0 {
		el.add("policy.listen", "at least one listener is needed")
	}
	positive(el, "policy.idle_timeout", c.Policy.IdleTimeout)
	positive(el, "policy.check_timeout", c.Policy.CheckTimeout)

	for i, s := range c.DNS.Servers {
		if _, err := ParseDNSServer(s); err != nil {
			el.add(fmt.Sprintf("dns.servers[%d]", i), "%v", err)
		}
	}
	positive(el, "dns.timeout", c.DNS.Timeout)
	if c.DNS.CacheSize < 0 {
		el.add("dns.cache_size", "must be 0 (no cache) or more")
	}

	g := &c.Greylist
	positive(el, "greylist.delay", g.Delay)
	positive(el, "greylist.retry_window", g.RetryWindow)
	positive(el, "greylist.max_age", g.MaxAge)
	positive(el, "greylist.sweep_interval", g.SweepInterval)
	if g.RetryWindow > 0 && g.Delay >= g.RetryWindow {
		el.add("greylist.retry_window", "must be longer than greylist.delay (%s), or no retry could ever pass", FormatDuration(g.Delay.D()))
	}
	if g.AutoWhitelistAfter < 0 {
		el.add("greylist.auto_whitelist_after", "must be 0 (disabled) or more")
	}
	if g.IPv4Prefix < 1 || g.IPv4Prefix > 32 {
		el.add("greylist.ipv4_prefix", "must be between 1 and 32")
	}
	if g.IPv6Prefix < 1 || g.IPv6Prefix > 128 {
		el.add("greylist.ipv6_prefix", "must be between 1 and 128")
	}
	if strings.Count(g.DeferText, "%") != strings.Count(g.DeferText, "%s")+strings.Count(g.DeferText, "%r")+2*strings.Count(g.DeferText, "%%") {
		el.add("greylist.defer_text", "only %%s (seconds left), %%r (recipient domain) and %%%% are allowed")
	}
	switch g.Store {
	case "bbolt", "redis":
	default:
		el.add("greylist.store", "must be bbolt or redis; got %q", g.Store)
	}
	if g.Enabled && g.Store == "redis" {
		r := &g.Redis
		if len(r.Addrs) == 0 {
			el.add("greylist.redis.addrs", "at least one host:port is needed")
		}
		for i, a := range r.Addrs {
			if _, _, err := splitHostPort(a); err != nil {
				el.add(fmt.Sprintf("greylist.redis.addrs[%d]", i), "bad address %q: %v", a, err)
			}
		}
		if r.DB < 0 {
			el.add("greylist.redis.db", "must be 0 or more")
		}
		if r.TLSCAFile != "" {
			if _, err := os.Stat(r.TLSCAFile); err != nil {
				el.add("greylist.redis.tls_ca_file", "%v", err)
			}
		}
		positive(el, "greylist.redis.dial_timeout", r.DialTimeout)
		positive(el, "greylist.redis.timeout", r.Timeout)
	}
	if g.Enabled && g.Store == "bbolt" {
		if g.DB == "" {
			el.add("greylist.db", "must be set when greylisting is enabled")
		} else if dir := filepath.Dir(g.DB); !isDir(dir) {
			el.add("greylist.db", "directory %s does not exist", dir)
		}
	}
	if g.Enabled {
		fileList(el, "greylist.whitelist_clients", g.WhitelistClients)
		fileList(el, "greylist.whitelist_recipients", g.WhitelistRecipients)
	}

	if c.SPF.Enabled {
		if _, err := c.SPF.Policy(); err != nil {
			el.add("spf", "%v", err)
		}
		for _, a := range []struct {
			key string
			v   *SPFActions
		}{{"spf.mailfrom", &c.SPF.MailFrom}, {"spf.helo", &c.SPF.Helo}} {
			for name, v := range a.v.byResult() {
				if _, err := spf.ParseAction(v); err != nil {
					el.add(a.key+"."+name, "must be accept, reject or defer; got %q", v)
				}
			}
		}
		switch c.SPF.Header {
		case "received-spf", "authentication-results", "none":
		default:
			el.add("spf.header", "must be received-spf, authentication-results or none; got %q", c.SPF.Header)
		}
		positive(el, "spf.timeout", c.SPF.Timeout)
		if c.SPF.LookupLimit < 1 {
			el.add("spf.lookup_limit", "must be 1 or more (RFC 7208: 10)")
		}
		if c.SPF.VoidLookupLimit < 1 {
			el.add("spf.void_lookup_limit", "must be 1 or more (RFC 7208: 2)")
		}
	}

	r := &c.RBL
	for i, entry := range r.Lists {
		if _, err := rbl.ParseList(entry); err != nil {
			el.add(fmt.Sprintf("rbl.lists[%d]", i), "%v", err)
		}
	}
	if err := (rbl.Thresholds{Reject: r.RejectScore, Greylist: r.GreylistScore, Allowlist: r.AllowlistScore}).Validate(); err != nil {
		el.add("rbl.reject_score", "%v", err)
	}
	for _, ch := range r.DQSKey {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9') {
			el.add("rbl.dqs_key", "must be letters and digits only")
			break
		}
	}
	positive(el, "rbl.timeout", r.Timeout)
	positive(el, "rbl.warn_interval", r.WarnInterval)
	if r.FailureWarnAfter < 1 {
		el.add("rbl.failure_warn_after", "must be 1 or more")
	}

	k := &c.DKIM
	switch {
	case k.KeyList != "" && (k.SigningTable != "" || k.KeyTable != ""):
		el.add("dkim.keylist", "set either keylist or signing_table + key_table, not both")
	case (k.SigningTable == "") != (k.KeyTable == ""):
		el.add("dkim.signing_table", "signing_table and key_table go together")
	}
	for _, f := range []struct{ key, path string }{{"dkim.keylist", k.KeyList}, {"dkim.signing_table", strings.TrimPrefix(k.SigningTable, "refile:")}, {"dkim.key_table", k.KeyTable}} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				el.add(f.key, "%v", err)
			}
		}
	}
	if _, _, err := dkim.ParseCanonicalization(k.Canonicalization); err != nil {
		el.add("dkim.canonicalization", "%v", err)
	}
	if !slices.ContainsFunc(k.SignedHeaders, func(h string) bool { return strings.EqualFold(h, "From") }) {
		el.add("dkim.signed_headers", "must include From (RFC 6376 section 5.4)")
	}
	if k.MaxVerifications < 1 {
		el.add("dkim.max_verifications", "must be 1 or more")
	}
	positive(el, "dkim.dns_timeout", k.DNSTimeout)
	for _, a := range []struct{ key, v string }{{"dkim.on_fail", k.OnFail}, {"dkim.on_permerror", k.OnPermError}, {"dkim.on_temperror", k.OnTempError}, {"dkim.on_unsigned", k.OnUnsigned}} {
		if _, err := milter.ParseAction(a.v); err != nil {
			el.add(a.key, "%v", err)
		}
	}
	positive(el, "milter.read_timeout", c.Milter.ReadTimeout)
	positive(el, "milter.write_timeout", c.Milter.WriteTimeout)

	if c.Admin.Listen != "" {
		if a, err := ParseListenAddr(c.Admin.Listen); err != nil || a.Network != "tcp" {
			el.add("admin.listen", "want host:port (TCP), got %q", c.Admin.Listen)
		}
	}
}

func positive(el *errorList, key string, d Duration) {
	if d <= 0 {
		el.add(key, "must be a positive duration")
	}
}

func fileList(el *errorList, key string, files []string) {
	for i, f := range files {
		if _, err := os.Stat(f); err != nil {
			el.add(fmt.Sprintf("%s[%d]", key, i), "%v", err)
		}
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func (a *SPFActions) byResult() map[string]string {
	return map[string]string{"pass": a.Pass, "fail": a.Fail, "softfail": a.SoftFail, "neutral": a.Neutral,
		"none": a.None, "permerror": a.PermError, "temperror": a.TempError}
}

func (a *SPFActions) actions() spf.Actions {
	p := func(s string) spf.Action { x, _ := spf.ParseAction(s); return x }
	return spf.Actions{Pass: p(a.Pass), Fail: p(a.Fail), SoftFail: p(a.SoftFail), Neutral: p(a.Neutral),
		None: p(a.None), PermError: p(a.PermError), TempError: p(a.TempError)}
}

// Policy turns the [spf] section into the SPF decision policy. helo_reject
// is the documented shorthand for helo.fail = "reject".
func (s *SPF) Policy() (*spf.Policy, error) {
	p := spf.DefaultPolicy()
	p.MailFrom = s.MailFrom.actions()
	p.Helo = s.Helo.actions()
	if s.HeloReject {
		p.Helo.Fail = spf.Reject
	}
	switch s.Header {
	case "received-spf":
		p.Header = spf.HeaderReceivedSPF
	case "authentication-results":
		p.Header = spf.HeaderAuthResults
	default:
		p.Header = spf.HeaderNone
	}
	p.ReceiverName = s.Receiver
	p.HideReceiver = s.HideReceiver
	p.DefaultExplanation = s.DefaultExplanation
	p.SkipClients = s.SkipClients
	p.SkipHelos = s.SkipHelos
	p.WhitelistDomains = s.WhitelistDomains
	p.GreylistWaivePass = s.GreylistWaivePass
	p.GreylistWaivePassDomains = s.GreylistWaiveDoms
	p.GreylistRequire = s.GreylistRequire
	p.GreylistPassOrigin = s.GreylistPoolAware
	return &p, p.Validate()
}
