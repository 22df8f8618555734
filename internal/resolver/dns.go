package resolver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a [DNS] resolver. The zero value is usable: servers
// from /etc/resolv.conf and the defaults below.
type Options struct {
	// Servers are the recursive resolvers to ask, as host:port, in order of
	// preference: the next one is asked when one times out, fails with a
	// network error, or answers SERVFAIL or REFUSED. Empty means the
	// nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds each exchange with one server (UDP, and TCP again
	// after a truncated answer). Default 2s.
	Timeout time.Duration
	// CacheSize bounds the number of cached answers; the least recently
	// used goes first. Default 10000; negative disables the cache.
	CacheSize int
	// MaxTTL caps how long an answer is cached. Default 1h.
	MaxTTL time.Duration
	// MinTTL is the shortest time an answer is cached, when it may be
	// cached at all (negative answers without an SOA never are). Default 0:
	// a TTL of 0 means not cached.
	MinTTL time.Duration
	// Registerer, if set, receives the postgate_dns_* metrics.
	Registerer prometheus.Registerer
	// Logger gets upstream failures at debug level; nil is slog.Default().
	Logger *slog.Logger
	// Now is the clock for cache expiry (for tests); nil is time.Now.
	Now func() time.Time
}

// DNS is the daemon's resolver: a caching stub resolver over miekg/dns,
// safe for concurrent use. Names are queried exactly as given (an SPF macro
// expansion may hold spaces or '%'); net.Resolver is not involved.
//
// Caching: answers are cached by (name, type), names compared
// case-insensitively, for the shortest TTL of the records used, negative
// answers per RFC 2308 (SOA TTL and MINIMUM, not cached without an SOA),
// clamped to [MinTTL, MaxTTL]. Temporary failures are never cached, but
// concurrent lookups of the same name and type share one upstream query.
type DNS struct {
	servers []string
	timeout time.Duration
	minTTL  time.Duration
	maxTTL  time.Duration
	now     func() time.Time
	log     *slog.Logger
	udp     *dns.Client
	tcp     *dns.Client
	cache   *cache
	flights flights
	metrics *metrics
}

var _ Resolver = (*DNS)(nil)

// New returns a resolver configured by opts.
func New(opts Options) (*DNS, error) {
	servers := opts.Servers
	if len(servers) == 0 {
		var err error
		if servers, err = ServersFromResolvConf(DefaultResolvConf); err != nil {
			return nil, err
		}
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("resolver: server %q: want host:port: %w", s, err)
		}
	}
	r := &DNS{
		servers: slices.Clone(servers),
		timeout: cmp.Or(opts.Timeout, 2*time.Second),
		minTTL:  opts.MinTTL,
		maxTTL:  cmp.Or(opts.MaxTTL, time.Hour),
		now:     opts.Now,
		log:     opts.Logger,
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.minTTL > r.maxTTL {
		return nil, fmt.Errorf("resolver: MinTTL %v above MaxTTL %v", r.minTTL, r.maxTTL)
	}
	size := opts.CacheSize
	if size == 0 {
		size = 10000
	}
	r.cache = newCache(size)
	r.udp = &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: r.timeout}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	var err error
	if r.metrics, err = newMetrics(opts.Registerer); err != nil {
		return nil, fmt.Errorf("resolver: metrics: %w", err)
	}
	return r, nil
}

// Answer is the result of a query that found records.
type Answer struct {
	// Name is the owner of Records, fully qualified: the name asked, or
	// the end of the CNAME chain it led to.
	Name string
	// Records are the records of the type asked, in answer order. They
	// are the caller's to modify.
	Records []dns.RR
	// TTL is how long the answer is (or would have been) cached from now.
	TTL time.Duration
}

// Query looks up records of any type at name, through the cache. Errors
// are as for the Lookup methods: NXDOMAIN and NODATA are not-found
// *net.DNSError, failures are temporary ones.
func (r *DNS) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	e, err := r.lookup(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	a := &Answer{Name: e.owner, Records: make([]dns.RR, len(e.records)), TTL: e.ttl}
	if !e.expires.IsZero() {
		a.TTL = max(e.expires.Sub(r.now()), 0)
	}
	for i, rr := range e.records {
		a.Records[i] = dns.Copy(rr)
	}
	return a, nil
}

// LookupTXT returns the TXT records of name in answer order, each with its
// strings concatenated (RFC 7208 section 3.3) and unescaped to raw bytes.
func (r *DNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	e, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(e.records))
	for _, rr := range e.records {
		out = append(out, txtString(rr.(*dns.TXT).Txt))
	}
	return out, nil
}

// LookupMX returns the MX records of name sorted by preference, hosts fully
// qualified (as net.Resolver does).
func (r *DNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	e, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(e.records))
	for _, rr := range e.records {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	slices.SortStableFunc(out, func(a, b *net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	return out, nil
}

// LookupA returns the A records of name.
func (r *DNS) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	e, err := r.lookup(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	return addrs(e.records), nil
}

// LookupIPAddr returns the A records then the AAAA records of host, asked
// for in parallel. The name does not exist if either answer says so; else
// a temporary failure of either is the result (a partial address list
// could turn an SPF temperror into a fail); NODATA only when both are
// empty.
func (r *DNS) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	type result struct {
		e   *entry
		err error
	}
	aaaa := make(chan result, 1)
	go func() {
		e, err := r.lookup(ctx, host, dns.TypeAAAA)
		aaaa <- result{e, err}
	}()
	var res [2]result
	res[0].e, res[0].err = r.lookup(ctx, host, dns.TypeA)
	res[1] = <-aaaa

	for _, x := range res {
		if IsNXDomain(x.err) {
			return nil, x.err
		}
	}
	var out []net.IPAddr
	var nodata error
	for _, x := range res {
		switch {
		case IsNoData(x.err):
			nodata = x.err
		case x.err != nil:
			return nil, x.err
		default:
			for _, a := range addrs(x.e.records) {
				out = append(out, net.IPAddr{IP: net.IP(a.AsSlice()), Zone: a.Zone()})
			}
		}
	}
	if len(out) == 0 {
		return nil, nodata
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr, an IPv4 or IPv6 address as
// text, fully qualified.
func (r *DNS) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	e, err := r.lookup(ctx, arpa, dns.TypePTR)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) {
			de.Name = addr
		}
		return nil, err
	}
	out := make([]string, 0, len(e.records))
	for _, rr := range e.records {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// lookup returns the entry for name/qtype with records, from the cache or
// upstream, or the caller's error. The entry is shared: read only.
func (r *DNS) lookup(ctx context.Context, name string, qtype uint16) (*entry, error) {
	// A caller that has already given up gets its context's error every
	// time. Without this check it got an answer when the name was cached or
	// when it ran the query itself (which ignores its cancellation), and an
	// error otherwise: a DKIM or SPF verdict depended on timing.
	if ctx.Err() != nil {
		return nil, ctxError(ctx, name)
	}
	key := keyFor(name, qtype)
	if e, ok := r.cache.get(key, r.now()); ok {
		r.metrics.hits.Inc()
		return e, e.err(name)
	}
	r.metrics.misses.Inc()
	qname, ok := questionName(name)
	if !ok {
		// As net.Resolver: a name that cannot exist does not exist.
		return nil, &net.DNSError{Err: ErrNoSuchHost, Name: name, IsNotFound: true}
	}

	fl, e := r.flights.join(key,
		func() (*entry, bool) { return r.cache.get(key, r.now()) },
		func() *entry {
			// The shared query keeps the first caller's context values but
			// not its cancellation; its own timeouts bound it.
			e := r.resolve(context.WithoutCancel(ctx), qname, qtype)
			r.store(key, e)
			return e
		})
	if fl != nil {
		select {
		case <-fl.done:
			e = fl.e
		case <-ctx.Done():
			return nil, ctxError(ctx, name)
		}
	}
	if e.kind == kindFound {
		return e, nil
	}
	return nil, e.err(name)
}

// store caches e for its clamped TTL if it may be cached.
func (r *DNS) store(key cacheKey, e *entry) {
	if e.kind == kindTemporary || e.noSOA {
		return
	}
	ttl := min(max(e.ttl, r.minTTL), r.maxTTL)
	e.ttl = ttl
	if ttl <= 0 {
		return
	}
	e.expires = r.now().Add(ttl)
	r.cache.put(key, e)
}

// questionName returns name as it goes in a question: fully qualified, in
// the presentation format miekg/dns also uses for names in answers (a
// space reads "\ "), so both compare equal. Any byte is allowed in a label,
// as given: an SPF macro expansion is queried as it is. ok is false when
// the name cannot be sent (a label over 63 bytes, an empty label, over 255
// bytes) or is the root, which is never what a consumer means.
func questionName(name string) (qname string, ok bool) {
	fqdn := dns.Fqdn(name)
	if fqdn == "." {
		return "", false
	}
	var buf [256]byte
	n, err := dns.PackDomainName(fqdn, buf[:], 0, nil, false)
	if err != nil {
		return "", false
	}
	qname, _, err = dns.UnpackDomainName(buf[:n], 0)
	return qname, err == nil
}

func addrs(rrs []dns.RR) []netip.Addr {
	out := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// txtString joins the strings of one TXT record and undoes miekg/dns's
// presentation escapes (\" \\ \DDD), giving back the bytes on the wire.
func txtString(parts []string) string {
	if len(parts) == 1 {
		return unescapeTXT(parts[0])
	}
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(unescapeTXT(p))
	}
	return b.String()
}

// unescapeTXT decodes one character-string in miekg/dns presentation form.
func unescapeTXT(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
