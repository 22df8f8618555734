package milter

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"postgate/dkim"
)

// Options configure a Server. The zero value verifies everything, signs
// nothing and uses the defaults documented on each field.
type Options struct {
	// Keyring picks the keys that sign mail from an author; nil signs nothing.
	// A reload swaps it with SetOptions.
	Keyring *dkim.Keyring
	// SignOptions and VerifyOptions are handed to the dkim package as they
	// are (nil: its defaults). VerifyOptions.Resolver must be set for
	// signed mail to verify; without it every signature is a temperror.
	SignOptions   *dkim.SignOptions
	VerifyOptions *dkim.VerifyOptions
	// AuthservID names this host in Authentication-Results (RFC 8601) and
	// is the id whose existing Authentication-Results headers are removed.
	// Default: the host name.
	AuthservID string
	// InternalNetworks: mail from a client address in these networks
	// originates here and is signed. nil means loopback (127.0.0.0/8,
	// ::1/128); an empty, non-nil slice means none.
	InternalNetworks []netip.Prefix
	// OriginatingDaemons: mail received by a Postfix service whose
	// {daemon_name} (milter_macro_daemon_name) is listed originates here.
	// nil means ["ORIGINATING"]; compared case-insensitively.
	OriginatingDaemons []string
	// Verdicts says what to do with a verified message, by its result:
	// the key is the result of the message (dkim.StatusNone when unsigned,
	// otherwise the result of its best signature, see Server). Missing
	// keys accept, as does a message with any passing signature.
	Verdicts map[dkim.Status]Action
	// Logger gets one line per message; nil means slog.Default().
	Logger *slog.Logger
	// Registerer gets the metrics at NewServer; nil registers nothing.
	// (SetOptions ignores it.)
	Registerer prometheus.Registerer
	// ReadTimeout bounds the wait for the MTA's next command; 0 means
	// DefaultReadTimeout, negative means none. Postfix keeps the milter
	// connection open for a whole SMTP session and the SMTP client may be
	// slow (smtpd_timeout is 300s), so keep it above that.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write to the MTA; 0 means
	// DefaultWriteTimeout, negative means none.
	WriteTimeout time.Duration
}

// Defaults of Options.
const (
	DefaultReadTimeout  = 10 * time.Minute
	DefaultWriteTimeout = time.Minute
)

// DefaultOriginatingDaemons is the {daemon_name} of the submission service
// in Postfix's documentation and in postgate's master.cf example.
var DefaultOriginatingDaemons = []string{"ORIGINATING"}

// DefaultInternalNetworks is loopback.
var DefaultInternalNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// Action is what the milter tells the MTA to do with a verified message.
type Action string

// The actions of Options.Verdicts.
const (
	Accept   Action = "accept"   // deliver, with Authentication-Results
	Reject   Action = "reject"   // 550 5.7.20
	TempFail Action = "tempfail" // 451 4.7.20: the sender retries later
)

// ParseAction reads an action as written in the configuration.
func ParseAction(s string) (Action, error) {
	switch a := Action(strings.ToLower(strings.TrimSpace(s))); a {
	case Accept, Reject, TempFail:
		return a, nil
	}
	return "", fmt.Errorf("unknown action %q (want accept, reject or tempfail)", s)
}

// config is Options with the defaults applied; a Server swaps it whole on
// SetOptions, and each message uses the one current at its MAIL FROM.
type config struct {
	keyring      *dkim.Keyring
	signOpts     *dkim.SignOptions
	verifyOpts   *dkim.VerifyOptions
	authservID   string
	internal     []netip.Prefix
	daemons      []string
	verdicts     map[dkim.Status]Action
	log          *slog.Logger
	readTimeout  time.Duration
	writeTimeout time.Duration
}

func newConfig(o Options) (*config, error) {
	c := &config{
		keyring:      o.Keyring,
		signOpts:     o.SignOptions,
		verifyOpts:   o.VerifyOptions,
		authservID:   o.AuthservID,
		internal:     o.InternalNetworks,
		daemons:      o.OriginatingDaemons,
		verdicts:     make(map[dkim.Status]Action, len(o.Verdicts)),
		log:          o.Logger,
		readTimeout:  o.ReadTimeout,
		writeTimeout: o.WriteTimeout,
	}
	if c.authservID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("milter: no AuthservID and no host name: %v", err)
		}
		c.authservID = h
	}
	if strings.ContainsAny(c.authservID, " \t\r\n;()\"") {
		return nil, fmt.Errorf("milter: AuthservID %q is not a valid authserv-id", c.authservID)
	}
	if c.internal == nil {
		c.internal = DefaultInternalNetworks
	}
	if c.daemons == nil {
		c.daemons = DefaultOriginatingDaemons
	}
	for st, a := range o.Verdicts {
		if _, err := ParseAction(string(a)); err != nil {
			return nil, fmt.Errorf("milter: verdict for %s: %v", st, err)
		}
		c.verdicts[st] = a
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.readTimeout == 0 {
		c.readTimeout = DefaultReadTimeout
	}
	if c.writeTimeout == 0 {
		c.writeTimeout = DefaultWriteTimeout
	}
	return c, nil
}

func (c *config) isInternal(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range c.internal {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c *config) isOriginatingDaemon(name string) bool {
	if name == "" {
		return false
	}
	for _, d := range c.daemons {
		if strings.EqualFold(d, name) {
			return true
		}
	}
	return false
}
