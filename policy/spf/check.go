// Package spf checks the HELO and MAIL FROM identities of an SMTP client
// with SPF (RFC 7208) and turns the results into a decision: reject,
// defer, or accept with a Received-SPF header, and what greylisting should
// make of it.
//
// Records are evaluated by blitiri.com.ar/go/spf. That library checks
// records only as far as it evaluates them, ignores exp=, refuses some
// legal domain-specs and lacks the %{p} macro, so this package stands
// between it and DNS: every SPF record is first checked against the
// complete ABNF of RFC 7208 section 12 and then handed to the library
// rewritten with all macros already expanded (by this package, every
// letter) and every name it could not take replaced by a placeholder that
// the resolver side maps back. Explanations are fetched here, from the
// record that produced the fail.
package spf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	blitiri "blitiri.com.ar/go/spf"

	"postgate/internal/resolver"
)

// SPF results (RFC 7208 section 2.6), as they appear in headers.
const (
	None      = "none"
	Neutral   = "neutral"
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	TempError = "temperror"
	PermError = "permerror"
)

// Identities checked (RFC 7208 section 2.3 and 2.4).
const (
	IdentityHelo     = "helo"
	IdentityMailFrom = "mailfrom"
)

// Options configure a Checker. Zero values mean the defaults.
type Options struct {
	Resolver resolver.Resolver
	// Timeout bounds one whole evaluation, all lookups included; when it
	// runs out the result is temperror. Default 20s, as pypolicyd-spf's
	// Lookup_Time, and far below Postfix's 100s policy timeout.
	Timeout time.Duration
	// LookupLimit is the number of terms causing DNS lookups (10,
	// RFC 7208 section 4.6.4); VoidLookupLimit the number of lookups
	// answering nothing (2).
	LookupLimit, VoidLookupLimit int
	// ReceiverName is this host's name, for %{r} in explanations.
	ReceiverName string
	Logger       *slog.Logger
	// Now is the clock for %{t}; nil means time.Now.
	Now func() time.Time
}

// A Checker evaluates SPF. It is safe for concurrent use.
type Checker struct {
	opts Options
	log  *slog.Logger
}

// New returns a Checker. Options.Resolver is required.
func New(opts Options) *Checker {
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.LookupLimit <= 0 {
		opts.LookupLimit = 10
	}
	if opts.VoidLookupLimit <= 0 {
		opts.VoidLookupLimit = 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Checker{opts: opts, log: log}
}

// Result is the outcome of checking one identity.
type Result struct {
	// Result is one of the constants None, Neutral, Pass, Fail, SoftFail,
	// TempError, PermError; "" means the identity was not checked.
	Result   string
	Identity string // IdentityHelo or IdentityMailFrom
	// Domain is the domain whose policy was evaluated: the HELO name, or
	// the domain of the sender (of postmaster@HELO for the null sender).
	Domain   string
	ClientIP netip.Addr
	Helo     string
	// Sender is the envelope sender as given, "" for the null sender.
	Sender string
	// Explanation is the domain's explanation (exp=) of a fail, macros
	// expanded; "" when it gave none.
	Explanation string
	// Mechanism is the kind of mechanism that matched ("ip4", "a", "all",
	// ...; within an include, the one that matched in the included
	// record), "default" when none did and the result is the default
	// neutral.
	Mechanism string
	// Problem says what went wrong, for permerror and temperror.
	Problem string
}

// CheckHelo checks the HELO identity: the policy of the HELO name, with
// postmaster@<helo> as the sender (RFC 7208 section 2.3).
func (c *Checker) CheckHelo(ctx context.Context, ip netip.Addr, helo string) Result {
	r := Result{Identity: IdentityHelo, Domain: helo, ClientIP: ip, Helo: helo}
	return c.check(ctx, r, "postmaster", helo)
}

// CheckMailFrom checks the MAIL FROM identity. The null sender ("") is
// checked as postmaster@<helo> (RFC 7208 section 2.4), and a sender with an
// empty local-part as postmaster@<domain>.
func (c *Checker) CheckMailFrom(ctx context.Context, ip netip.Addr, helo, sender string) Result {
	r := Result{Identity: IdentityMailFrom, ClientIP: ip, Helo: helo, Sender: sender}
	local, domain := "postmaster", helo
	if sender != "" {
		if i := strings.LastIndexByte(sender, '@'); i >= 0 {
			local, domain = sender[:i], sender[i+1:]
			if local == "" {
				local = "postmaster"
			}
		} else {
			domain = sender
		}
	}
	r.Domain = domain
	return c.check(ctx, r, local, domain)
}

func (c *Checker) check(ctx context.Context, r Result, local, domain string) Result {
	start := time.Now()
	r = c.evaluate(ctx, r, local, domain)
	c.log.Debug("spf check", "identity", r.Identity, "ip", r.ClientIP, "domain", r.Domain,
		"result", r.Result, "mechanism", r.Mechanism, "problem", r.Problem,
		"duration", time.Since(start))
	return r
}

func (c *Checker) evaluate(ctx context.Context, r Result, local, domain string) Result {
	ip := r.ClientIP.Unmap()
	if !ip.IsValid() {
		r.Result, r.Problem = PermError, "invalid client IP address"
		return r
	}
	// Section 4.3: a malformed or single-label domain gives none.
	if err := checkInitialDomain(domain); err != nil {
		r.Result, r.Problem = None, err.Error()
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()

	e := &evaluation{
		ctx: ctx,
		res: c.opts.Resolver,
		env: macroEnv{
			sender:   local + "@" + domain,
			local:    local,
			domain:   domain,
			helo:     r.Helo,
			ip:       ip,
			receiver: c.opts.ReceiverName,
			now:      c.opts.Now(),
		},
	}
	e.env.ptr = e.validatedName
	top := e.newToken(domain, kindTop, -1)
	res, err := blitiri.CheckHostWithSender(net.IP(ip.AsSlice()), "", "postmaster@"+top,
		blitiri.WithResolver(e),
		blitiri.WithContext(ctx),
		blitiri.OverrideLookupLimit(uint(c.opts.LookupLimit)),
		blitiri.OverrideVoidLookupLimit(uint(c.opts.VoidLookupLimit)))
	r.Result = string(res)
	r.Mechanism = mechanismOf(err)
	if r.Mechanism == "ip" {
		// The client's address family tells which one matched: the
		// address is unmapped, so ip6 never matches an IPv4 client.
		r.Mechanism = "ip6"
		if ip.Is4() {
			r.Mechanism = "ip4"
		}
	}
	switch res {
	case blitiri.PermError, blitiri.TempError:
		r.Problem = e.problem
		if r.Problem == "" && err != nil {
			r.Problem = e.unmask(err.Error())
		}
		if res == blitiri.TempError && ctx.Err() != nil {
			r.Problem = "SPF evaluation timed out"
		}
	case blitiri.Fail:
		r.Explanation = e.explanation()
	}
	return r
}

// checkInitialDomain applies section 4.3 to the domain of the identity.
func checkInitialDomain(d string) error {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return errors.New("no domain")
	}
	if strings.HasPrefix(d, "[") {
		return fmt.Errorf("domain %q is an address literal", d)
	}
	if len(d) > 253 {
		return fmt.Errorf("domain %q is too long", d)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("domain %q is not fully qualified", d)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("domain %q has an invalid label", d)
		}
	}
	return nil
}

func mechanismOf(err error) string {
	switch err {
	case blitiri.ErrMatchedAll:
		return "all"
	case blitiri.ErrMatchedA:
		return "a"
	case blitiri.ErrMatchedIP:
		return "ip"
	case blitiri.ErrMatchedMX:
		return "mx"
	case blitiri.ErrMatchedPTR:
		return "ptr"
	case blitiri.ErrMatchedExists:
		return "exists"
	case nil:
		return "default"
	}
	return ""
}

// Placeholder names. The library gets a placeholder for every include and
// redirect target (so the evaluation knows in which role it fetches a
// record) and for every name it cannot take as it is (with "/", "%",
// spaces, non-ASCII). A placeholder is "_<n>" + tokenSuffix; a name that
// merely looks like one is itself replaced, so they cannot be confused.
const tokenSuffix = "._postgate-spf.invalid"

type tokenKind int

const (
	kindName     tokenKind = iota // a, mx, ptr, exists target
	kindTop                       // the domain of the identity
	kindInclude                   // include target
	kindRedirect                  // redirect target
)

type token struct {
	name   string
	kind   tokenKind
	parent int // index in evaluation.records of the record naming it; -1 for the top
}

type fetchedRecord struct {
	domain string
	rec    *record // nil when there was no valid record
	token  int
}

// An evaluation is one check_host() run. It is the resolver the library
// sees; the library calls it from one goroutine.
type evaluation struct {
	ctx     context.Context
	res     resolver.Resolver
	env     macroEnv
	tokens  []token
	records []fetchedRecord
	problem string // first syntax or selection problem met

	ptrDone  bool
	ptrNames []string // validated names of the client IP
}

func (e *evaluation) newToken(name string, kind tokenKind, parent int) string {
	e.tokens = append(e.tokens, token{name: name, kind: kind, parent: parent})
	return "_" + strconv.Itoa(len(e.tokens)-1) + tokenSuffix
}

// lookupToken maps a placeholder back to its token.
func (e *evaluation) lookupToken(name string) (int, bool) {
	n, ok := strings.CutSuffix(name, tokenSuffix)
	if !ok || !strings.HasPrefix(n, "_") {
		return 0, false
	}
	i, err := strconv.Atoi(n[1:])
	if err != nil || i < 0 || i >= len(e.tokens) {
		return 0, false
	}
	return i, true
}

func (e *evaluation) realName(name string) string {
	if i, ok := e.lookupToken(name); ok {
		return e.tokens[i].name
	}
	return name
}

// unmask replaces placeholders in a library message with the real names.
func (e *evaluation) unmask(s string) string {
	for i := len(e.tokens) - 1; i >= 0; i-- {
		s = strings.ReplaceAll(s, "_"+strconv.Itoa(i)+tokenSuffix, e.tokens[i].name)
	}
	return s
}

// dnsErr makes sure the library sees an unwrapped *net.DNSError, the only
// error it tells temporary from permanent by; anything else (a cancelled
// context) is temporary.
func dnsErr(err error, name string) error {
	if err == nil {
		return nil
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	return &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true,
		IsTimeout: errors.Is(err, context.DeadlineExceeded)}
}

func (e *evaluation) LookupTXT(ctx context.Context, name string) ([]string, error) {
	i, ok := e.lookupToken(name)
	if !ok || e.tokens[i].kind == kindName {
		txts, err := e.res.LookupTXT(ctx, e.realName(name))
		return txts, dnsErr(err, e.realName(name))
	}
	return e.fetchRecord(ctx, i)
}

func (e *evaluation) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	n := e.realName(name)
	mxs, err := e.res.LookupMX(ctx, n)
	return mxs, dnsErr(err, n)
}

func (e *evaluation) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	n := e.realName(host)
	ips, err := e.res.LookupIPAddr(ctx, n)
	return ips, dnsErr(err, n)
}

func (e *evaluation) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	names, err := e.res.LookupAddr(ctx, addr)
	return names, dnsErr(err, addr)
}

// A record the library takes for a syntax error: an unknown mechanism.
const (
	invalidRecord = "v=spf1 postgate-invalid-record"
	anyRecord     = "v=spf1"
)

// fetchRecord fetches the SPF record of a top, include or redirect target,
// checks it and returns it rewritten for the library.
func (e *evaluation) fetchRecord(ctx context.Context, tok int) ([]string, error) {
	domain := e.tokens[tok].name
	txts, err := e.res.LookupTXT(ctx, domain)
	if err != nil {
		return nil, dnsErr(err, domain)
	}
	var spf []string
	for _, t := range txts {
		if isSPFRecord(t) {
			spf = append(spf, t)
		}
	}
	switch len(spf) {
	case 0:
		if e.tokens[tok].kind != kindTop {
			e.setProblem(fmt.Sprintf("no SPF record at %s", domain))
		}
		return nil, nil
	case 1:
	default:
		e.setProblem(fmt.Sprintf("%s has %d SPF records", domain, len(spf)))
		return []string{anyRecord, anyRecord}, nil
	}
	rec, err := parseRecord(spf[0])
	idx := len(e.records)
	e.records = append(e.records, fetchedRecord{domain: domain, rec: rec, token: tok})
	if err != nil {
		e.setProblem(fmt.Sprintf("invalid SPF record at %s: %v", domain, err))
		return []string{invalidRecord}, nil
	}
	out, err := e.rewrite(rec, domain, idx)
	if err != nil {
		e.setProblem(fmt.Sprintf("SPF record at %s: %v", domain, err))
		return []string{invalidRecord}, nil
	}
	return []string{out}, nil
}

func (e *evaluation) setProblem(p string) {
	if e.problem == "" {
		e.problem = p
	}
}

// rewrite turns a checked record into one for the library: macros
// expanded, default domains made explicit, exp= and unknown modifiers
// left out, include and redirect targets and unusual names replaced by
// placeholders.
func (e *evaluation) rewrite(rec *record, domain string, idx int) (string, error) {
	var b strings.Builder
	b.WriteString("v=spf1")
	for _, t := range rec.terms {
		b.WriteByte(' ')
		b.WriteByte(t.qualifier)
		b.WriteString(t.name)
		switch t.name {
		case "ip4", "ip6":
			b.WriteByte(':')
			b.WriteString(t.prefix.String())
		case "include":
			name, err := e.expandDomain(t.target, domain)
			if err != nil {
				return "", err
			}
			b.WriteByte(':')
			b.WriteString(e.newToken(name, kindInclude, idx))
		case "a", "mx", "ptr", "exists":
			name := domain
			if t.target != "" {
				var err error
				if name, err = e.expandDomain(t.target, domain); err != nil {
					return "", err
				}
			}
			b.WriteByte(':')
			b.WriteString(e.safeName(name))
			if t.cidr4 >= 0 {
				b.WriteString("/" + strconv.Itoa(t.cidr4))
			}
			if t.cidr6 >= 0 {
				b.WriteString("//" + strconv.Itoa(t.cidr6))
			}
		}
	}
	if rec.redirect != "" {
		name, err := e.expandDomain(rec.redirect, domain)
		if err != nil {
			return "", err
		}
		b.WriteString(" redirect=")
		b.WriteString(e.newToken(name, kindRedirect, idx))
	}
	return b.String(), nil
}

// expandDomain expands the macros of a domain-spec of the record of
// domain, and shortens the result to a legal length (section 4.8).
func (e *evaluation) expandDomain(spec, domain string) (string, error) {
	env := e.env
	env.cur = domain
	name, err := expandMacros(spec, false, false, &env)
	if err != nil {
		return "", err
	}
	return truncateDomain(name), nil
}

// safeName returns name if the library takes it as it is, or a
// placeholder for it.
func (e *evaluation) safeName(name string) string {
	ok := name != "" && !strings.HasSuffix(strings.TrimSuffix(name, "."), tokenSuffix)
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c > 0x20 && c < 0x7f && c != '/' && c != '%'
	}
	if ok {
		return name
	}
	return e.newToken(name, kindName, -1)
}

// validatedName is the %{p} macro: a name of the client IP whose address
// records lead back to it, preferring one within domain (section 7.3).
func (e *evaluation) validatedName(domain string) string {
	if !e.ptrDone {
		e.ptrDone = true
		names, err := e.res.LookupAddr(e.ctx, e.env.ip.String())
		if err == nil {
			if len(names) > 10 {
				names = names[:10]
			}
			for _, n := range names {
				addrs, err := e.res.LookupIPAddr(e.ctx, n)
				if err != nil {
					continue
				}
				for _, a := range addrs {
					if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == e.env.ip {
						e.ptrNames = append(e.ptrNames, strings.TrimSuffix(n, "."))
						break
					}
				}
			}
		}
	}
	if len(e.ptrNames) == 0 {
		return "unknown"
	}
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, n := range e.ptrNames {
		ln := strings.ToLower(n)
		if ln == d || strings.HasSuffix(ln, "."+d) {
			return n
		}
	}
	return e.ptrNames[0]
}

// explanation fetches the explanation of a fail (section 6.2): the exp= of
// the record that produced it, which is the last of the chain of redirects
// starting at the top record (include targets never produce a fail, and
// their exp= must not be used). Any problem means no explanation.
func (e *evaluation) explanation() string {
	cur := -1
	for i, r := range e.records {
		if e.tokens[r.token].kind == kindTop {
			cur = i
			break
		}
	}
	if cur < 0 {
		return ""
	}
	for next := true; next; {
		next = false
		for i, r := range e.records {
			t := e.tokens[r.token]
			if t.kind == kindRedirect && t.parent == cur {
				cur, next = i, true
				break
			}
		}
	}
	r := e.records[cur]
	if r.rec == nil || r.rec.exp == "" {
		return ""
	}
	name, err := e.expandDomain(r.rec.exp, r.domain)
	if err != nil {
		return ""
	}
	txts, err := e.res.LookupTXT(e.ctx, name)
	if err != nil || len(txts) != 1 {
		return ""
	}
	env := e.env
	env.cur = r.domain
	exp, err := expandMacros(txts[0], true, true, &env)
	if err != nil {
		return ""
	}
	return exp
}
