// Package rbl scores a client against DNS block and allow lists: DNSBLs and
// DNSWLs for the client IP address, RHSBLs for the sender domain, the HELO
// name and the client name. It knows nothing of the Postfix protocol; the
// policy pipeline turns a Report into an action with Report.Decide.
//
// Lists are written in postscreen's notation (see ParseList); all lists of
// one Score are queried in parallel under one deadline. Safe by default:
//   - an answer counts only if it is in 127.0.0.0/8, passes the list's
//     filter and is not one of the error codes in codes.go (Spamhaus's
//     127.255.255.0/24, DNSWL's 127.0.0.255, DBL's 127.0.1.255); error
//     codes are logged with their meaning and counted in
//     postgate_rbl_list_errors_total{zone,kind};
//   - a DNS failure or timeout is "not listed": logged, counted in
//     postgate_rbl_lookup_failures_total{zone}, and a list that keeps
//     failing gets a WARN line once per Options.WarnInterval.
//
// Spamhaus DQS: zones under dq.spamhaus.net (zen.dq.spamhaus.net,
// dbl.dq.spamhaus.net, ...) are queried as <key>.<zone> with
// Options.DQSKey. The configuration, Reports, logs, metrics and reply texts
// all carry the zone without the key; where a query name is shown, the key
// reads "<DQS-key>".
//
// Caching is the shared resolver's job (it honours the TTLs of answers).
package rbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"postgate/internal/promreg"

	"postgate/internal/resolver"
)

// Defaults of Options.
const (
	DefaultTimeout          = 5 * time.Second
	DefaultFailureThreshold = 5
	DefaultWarnInterval     = 10 * time.Minute
)

// Secret is a string that formats and logs as "<redacted>", so that an
// Options printed or logged by mistake does not leak the DQS key.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

// GoString covers %#v.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// LogValue covers slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// dqsSuffix is the parent of every Spamhaus DQS zone.
const dqsSuffix = ".dq.spamhaus.net"

// maskedKey stands for the DQS key in every name that is shown.
const maskedKey = "<DQS-key>"

// Options configure a Checker.
type Options struct {
	Lists    []List
	Resolver resolver.Resolver // required when Lists is not empty

	// Timeout is one deadline for all lists of one Score (and for the TXT
	// lookup of Reason). 0 means DefaultTimeout.
	Timeout time.Duration

	// DQSKey is the Spamhaus Data Query Service key, prepended to zones
	// under dq.spamhaus.net. Letters and digits only.
	DQSKey Secret

	// FailureThreshold is how many consecutive failed lookups make a list
	// "failing" (WARN). 0 means DefaultFailureThreshold.
	FailureThreshold int
	// WarnInterval is the least time between two WARN lines about the same
	// list and problem. 0 means DefaultWarnInterval.
	WarnInterval time.Duration

	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
	Now        func() time.Time      // nil: time.Now; tests inject a clock
}

// Checker queries the configured lists. It is safe for concurrent use.
type Checker struct {
	lists         []List
	res           resolver.Resolver
	timeout       time.Duration
	key           string // lower case; "" without DQS
	failThreshold int
	warnInterval  time.Duration
	log           *slog.Logger
	now           func() time.Time
	m             *metrics

	mu     sync.Mutex
	health map[string]*zoneHealth // by configured zone
}

// zoneHealth remembers what has been logged about one zone, so that a
// broken list is reported once per WarnInterval instead of at every message.
type zoneHealth struct {
	consecutive int       // failed lookups since the last answer
	failing     bool      // a "keeps failing" WARN was logged since the last answer
	failWarned  time.Time // when that WARN was logged
	errWarned   map[ErrorKind]time.Time
	suppressed  map[ErrorKind]int // list errors logged at DEBUG since the last WARN
}

// New checks opts and returns a Checker.
func New(opts Options) (*Checker, error) {
	c := &Checker{
		lists:         append([]List(nil), opts.Lists...),
		res:           opts.Resolver,
		timeout:       opts.Timeout,
		key:           strings.ToLower(string(opts.DQSKey)),
		failThreshold: opts.FailureThreshold,
		warnInterval:  opts.WarnInterval,
		log:           opts.Logger,
		now:           opts.Now,
		health:        make(map[string]*zoneHealth),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.failThreshold <= 0 {
		c.failThreshold = DefaultFailureThreshold
	}
	if c.warnInterval <= 0 {
		c.warnInterval = DefaultWarnInterval
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if len(c.lists) > 0 && c.res == nil {
		return nil, errors.New("rbl: no resolver")
	}
	if c.key != "" {
		if len(c.key) > 63 || strings.Trim(c.key, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			// Not echoed: a mistyped key is still mostly a key.
			return nil, errors.New("rbl: DQS key must be letters and digits only")
		}
	}
	dqsUsed := false
	for _, l := range c.lists {
		if l.Targets == 0 || l.Zone == "" {
			return nil, fmt.Errorf("rbl: list %q: not made by ParseList", l.String())
		}
		if strings.HasSuffix(l.Zone, dqsSuffix) {
			if c.key == "" {
				return nil, fmt.Errorf("rbl: list %q: a zone under dq.spamhaus.net needs a DQS key", l.String())
			}
			dqsUsed = true
		}
		if c.health[l.Zone] == nil {
			c.health[l.Zone] = &zoneHealth{errWarned: make(map[ErrorKind]time.Time), suppressed: make(map[ErrorKind]int)}
		}
	}
	if c.key != "" && !dqsUsed {
		c.log.Warn("rbl: a DQS key is set but no list is under dq.spamhaus.net; the key is unused")
	}
	var err error
	if c.m, err = newMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	return c, nil
}

// Lists returns the configured lists.
func (c *Checker) Lists() []List { return append([]List(nil), c.lists...) }

// Status is the outcome of one list for one subject.
type Status int

const (
	NotListed    Status = iota // no record, or records the filter does not accept
	Listed                     // counted
	ListError                  // an error code (codes.go): never counted
	LookupFailed               // DNS failure or timeout: treated as not listed
	Skipped                    // the query has nothing this list can be asked about
)

func (s Status) String() string {
	switch s {
	case NotListed:
		return "not listed"
	case Listed:
		return "listed"
	case ListError:
		return "list error"
	case LookupFailed:
		return "lookup failed"
	case Skipped:
		return "skipped"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is what one list said about one subject.
type Result struct {
	List    List
	Targets Target // the list's targets that had this Subject (sender,helo when both are example.com)
	Subject string // IP address or domain name queried; "" when Skipped
	Name    string // the DNS name queried, DQS key masked
	Status  Status
	Answers []netip.Addr // every A record answered
	Meaning string       // of the listing, the error code, the failure or the skip
	Error   ErrorKind    // with ListError
	Weight  int          // added to the score: List.Weight on the first Listed result of a list, else 0

	entry int // index of List in the configuration: weights count once per entry
}

// Report is the outcome of one Score.
type Report struct {
	Query   Query
	Score   int
	Results []Result // in list order, then target order
}

// Hits returns the Listed results.
func (r Report) Hits() []Result { return r.filter(Listed) }

// Errors returns the results that are list errors or failed lookups.
func (r Report) Errors() []Result { return r.filter(ListError, LookupFailed) }

func (r Report) filter(statuses ...Status) []Result {
	var out []Result
	for _, res := range r.Results {
		for _, s := range statuses {
			if res.Status == s {
				out = append(out, res)
			}
		}
	}
	return out
}

// TopHit returns the counted hit with the greatest positive weight (the
// first on ties): the list a reject reply names.
func (r Report) TopHit() (Result, bool) {
	var best Result
	found := false
	for _, res := range r.Results {
		if res.Status == Listed && res.Weight > 0 && (!found || res.Weight > best.Weight) {
			best, found = res, true
		}
	}
	return best, found
}

// lookup is one DNS query, shared by every list entry and target that
// need the same name.
type lookup struct {
	zone    string // configured zone (no key)
	name    string // real query name
	shown   string // query name with the key masked
	answers []netip.Addr
	err     error
	failure string // redacted failure text; "" when the lookup did not fail
}

// Score queries every list for q in parallel and sums the weights of the
// lists that list it. It always returns within Options.Timeout (or when
// ctx ends); failures are in the Report, never an error.
func (c *Checker) Score(ctx context.Context, q Query) Report {
	subjects := q.subjects()
	rep := Report{Query: q}
	lookups := make(map[string]*lookup)
	type pending struct {
		resIdx int
		lk     *lookup
	}
	var pend []pending

	for entry, l := range c.lists {
		var group []Result // one per distinct subject text, in target order
		for _, s := range subjects {
			if l.Targets&s.target == 0 {
				continue
			}
			if i := indexSubject(group, s.text); i >= 0 {
				group[i].Targets |= s.target
				continue
			}
			group = append(group, Result{List: l, Targets: s.target, Subject: s.text, entry: entry})
		}
		if len(group) == 0 {
			rep.Results = append(rep.Results, Result{List: l, Targets: l.Targets, Status: Skipped, entry: entry,
				Meaning: "nothing to query: no " + l.Targets.String() + " in the query"})
			continue
		}
		for _, res := range group {
			prefix := res.Subject
			if res.Targets == TargetIP {
				prefix = reverseIP(netip.MustParseAddr(res.Subject))
			}
			name, shown := c.queryName(l.Zone, prefix)
			res.Name = shown
			if len(name) > 253 {
				res.Status, res.Meaning = Skipped, "query name longer than 253 characters"
				rep.Results = append(rep.Results, res)
				continue
			}
			lk := lookups[name]
			if lk == nil {
				lk = &lookup{zone: l.Zone, name: name, shown: shown}
				lookups[name] = lk
			}
			pend = append(pend, pending{len(rep.Results), lk})
			rep.Results = append(rep.Results, res)
		}
	}

	c.resolveAll(ctx, lookups)

	for _, p := range pend {
		res := &rep.Results[p.resIdx]
		c.judge(res, p.lk)
		if res.Status == Listed {
			c.m.listed.WithLabelValues(res.List.Zone).Inc()
		}
	}
	// Count each list entry once, on its first Listed result.
	counted := make([]bool, len(c.lists))
	for i := range rep.Results {
		res := &rep.Results[i]
		if res.Status == Listed && !counted[res.entry] {
			counted[res.entry] = true
			res.Weight = res.List.Weight
			rep.Score += res.Weight
		}
	}
	return rep
}

func indexSubject(rs []Result, text string) int {
	for i, r := range rs {
		if r.Subject == text {
			return i
		}
	}
	return -1
}

// queryName builds the DNS name for prefix under zone: the real one (with
// the DQS key, if any) and the one shown (key masked).
func (c *Checker) queryName(zone, prefix string) (name, shown string) {
	if c.key != "" && strings.HasSuffix(zone, dqsSuffix) {
		return prefix + "." + c.key + "." + zone, prefix + "." + maskedKey + "." + zone
	}
	n := prefix + "." + zone
	return n, n
}

// resolveAll runs every lookup in parallel under one deadline. Lookups
// still running at the deadline are abandoned as timeouts; their
// goroutines end on the cancelled context and write to a buffered channel.
func (c *Checker) resolveAll(parent context.Context, lookups map[string]*lookup) {
	if len(lookups) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	type answer struct {
		lk    *lookup
		addrs []netip.Addr
		err   error
	}
	ch := make(chan answer, len(lookups))
	for _, lk := range lookups {
		go func() {
			addrs, err := c.res.LookupA(ctx, lk.name)
			ch <- answer{lk, addrs, err}
		}()
	}
	got := make(map[*lookup]bool, len(lookups))
wait:
	for range len(lookups) {
		select {
		case a := <-ch:
			a.lk.answers, a.lk.err = a.addrs, a.err
			got[a.lk] = true
		case <-ctx.Done():
			break wait
		}
	}
	for _, lk := range lookups {
		if !got[lk] {
			lk.err = ctx.Err()
		}
		c.account(parent, lk)
	}
}

// account classifies the outcome of one lookup, updates metrics and the
// zone's health, and logs.
func (c *Checker) account(parent context.Context, lk *lookup) {
	c.m.lookups.WithLabelValues(lk.zone).Inc()
	if lk.err != nil {
		var de *net.DNSError
		if errors.As(lk.err, &de) && de.IsNotFound {
			c.answered(lk.zone)
			return
		}
		lk.failure = c.failureText(lk.err)
		if parent.Err() != nil {
			// The caller gave up (client gone): not the list's fault.
			lk.failure = "cancelled: " + lk.failure
			return
		}
		c.m.failures.WithLabelValues(lk.zone).Inc()
		c.log.Info("rbl: lookup failed, treated as not listed", "zone", lk.zone, "name", lk.shown, "error", lk.failure)
		c.failed(lk.zone, lk.failure)
		return
	}
	c.answered(lk.zone)
	seen := map[ErrorKind]bool{}
	for _, a := range lk.answers {
		if k := classify(a); k != "" && !seen[k] {
			seen[k] = true
			c.m.listErrors.WithLabelValues(lk.zone, string(k)).Inc()
			c.listError(lk.zone, lk.shown, k, a)
		}
	}
}

func (c *Checker) failureText(err error) string {
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case de != nil:
		// Err holds the reason without the name (and so without the key).
		return c.redact(de.Err)
	}
	return c.redact(err.Error())
}

// redact removes the DQS key from s, whatever its case.
func (c *Checker) redact(s string) string {
	if c.key == "" {
		return s
	}
	for {
		i := strings.Index(strings.ToLower(s), c.key)
		if i < 0 {
			return s
		}
		s = s[:i] + maskedKey + s[i+len(c.key):]
	}
}

// judge fills res from the lookup of its name.
func (c *Checker) judge(res *Result, lk *lookup) {
	switch {
	case lk.failure != "":
		res.Status, res.Meaning = LookupFailed, lk.failure
		if strings.HasSuffix(res.List.Zone, dqsSuffix) && !strings.HasPrefix(lk.failure, "timeout") {
			res.Meaning += " (a disabled or wrong DQS key answers REFUSED or SERVFAIL)"
		}
		return
	case lk.err != nil || len(lk.answers) == 0:
		res.Status, res.Meaning = NotListed, "no record"
		return
	}
	res.Answers = lk.answers
	var errs, hits []string
	for _, a := range lk.answers {
		if k := classify(a); k != "" {
			if res.Error == "" {
				res.Error = k
			}
			errs = append(errs, a.String()+": "+k.Meaning())
		} else if res.List.Filter.Match(a) {
			hits = append(hits, answerMeaning(res.List.Zone, a))
		}
	}
	switch {
	case len(errs) > 0:
		// An error code taints the whole answer: a list in an error state
		// says nothing reliable about the client.
		res.Status, res.Meaning = ListError, strings.Join(errs, "; ")
	case len(hits) > 0:
		res.Status, res.Meaning = Listed, strings.Join(dedupe(hits), "; ")
	default:
		// Only a filter can turn down an answer that is not an error code.
		res.Status, res.Meaning = NotListed, "answer not matched by filter "+res.List.Filter.String()
	}
}

func dedupe(ss []string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		dup := false
		for _, o := range out {
			dup = dup || o == s
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}

// answered notes that zone answered (a record or NXDOMAIN).
func (c *Checker) answered(zone string) {
	c.mu.Lock()
	h := c.health[zone]
	n, wasFailing := h.consecutive, h.failing
	h.consecutive, h.failing = 0, false
	c.mu.Unlock()
	if wasFailing {
		c.log.Info("rbl: list answers again", "zone", zone, "failed_lookups", n)
	}
}

// failed notes a failed lookup and warns once per interval while the list
// keeps failing.
func (c *Checker) failed(zone, failure string) {
	now := c.now()
	c.mu.Lock()
	h := c.health[zone]
	h.consecutive++
	n := h.consecutive
	warn := n >= c.failThreshold && (h.failWarned.IsZero() || now.Sub(h.failWarned) >= c.warnInterval)
	if warn {
		h.failWarned, h.failing = now, true
	}
	c.mu.Unlock()
	if warn {
		c.log.Warn("rbl: list keeps failing; it is treated as not listing anybody",
			"zone", zone, "consecutive_failures", n, "last_error", failure)
	}
}

// listError logs an error code: WARN at once, then at most once per
// interval with the number of occurrences logged at DEBUG meanwhile.
func (c *Checker) listError(zone, shown string, k ErrorKind, a netip.Addr) {
	now := c.now()
	c.mu.Lock()
	h := c.health[zone]
	last, ok := h.errWarned[k]
	warn := !ok || now.Sub(last) >= c.warnInterval
	suppressed := h.suppressed[k]
	if warn {
		h.errWarned[k], h.suppressed[k] = now, 0
	} else {
		h.suppressed[k]++
	}
	c.mu.Unlock()
	attrs := []any{"zone", zone, "name", shown, "answer", a.String(), "kind", string(k), "meaning", k.Meaning()}
	if warn {
		c.log.Warn("rbl: list answered an error code, not a listing", append(attrs, "since_last_warning", suppressed)...)
	} else {
		c.log.Debug("rbl: list answered an error code, not a listing", attrs...)
	}
}

// Reason fetches the TXT record of a Listed result for the reject text;
// it is "" when the result is not Listed or the list has no usable TXT.
// Call it only when rejecting: it is one more DNS round trip.
func (c *Checker) Reason(ctx context.Context, r Result) string {
	if r.Status != Listed || r.Subject == "" {
		return ""
	}
	prefix := r.Subject
	if r.Targets == TargetIP {
		ip, err := netip.ParseAddr(r.Subject)
		if err != nil {
			return ""
		}
		prefix = reverseIP(ip)
	}
	name, shown := c.queryName(r.List.Zone, prefix)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	txts, err := c.res.LookupTXT(ctx, name)
	if err != nil || len(txts) == 0 {
		if err != nil {
			c.log.Debug("rbl: no TXT reason", "zone", r.List.Zone, "name", shown, "error", c.failureText(err))
		}
		return ""
	}
	return sanitizeReason(c.redact(txts[0]))
}

// maxReasonLen keeps a reply line well under SMTP's 512 octets.
const maxReasonLen = 300

// sanitizeReason makes remote TXT text safe for an SMTP reply: printable
// ASCII only, white space collapsed, bounded length.
func sanitizeReason(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == ' ' || r == '\t' || r == '\r' || r == '\n':
			space = b.Len() > 0
			continue
		case r < 0x21 || r > 0x7e:
			r = '?'
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len() >= maxReasonLen {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// metrics are the counters of a Checker.
type metrics struct {
	lookups    *prometheus.CounterVec
	failures   *prometheus.CounterVec
	listErrors *prometheus.CounterVec
	listed     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_rbl_lookups_total", Help: "DNS list lookups made, by zone.",
		}, []string{"zone"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_rbl_lookup_failures_total", Help: "DNS list lookups that failed or timed out (treated as not listed), by zone.",
		}, []string{"zone"}),
		listErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_rbl_list_errors_total", Help: "List answers that are error codes, not listings, by zone and kind.",
		}, []string{"zone", "kind"}),
		listed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postgate_rbl_listed_total", Help: "Subjects found listed (matching the filter), by zone.",
		}, []string{"zone"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, p := range []**prometheus.CounterVec{&m.lookups, &m.failures, &m.listErrors, &m.listed} {
		// A second Checker (reload) shares the counters of the first.
		c, err := promreg.Register(reg, *p)
		if err != nil {
			return nil, fmt.Errorf("rbl: metrics: %w", err)
		}
		*p = c
	}
	return m, nil
}
