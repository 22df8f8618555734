package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the EDNS0 UDP buffer size advertised: the DNS Flag Day 2020
// value, which avoids IP fragmentation on nearly every path.
const ednsSize = 1232

// maxCNAMEHops bounds how many CNAMEs of one answer are followed.
const maxCNAMEHops = 16

// resolve asks the servers in order for fqdn/qtype and interprets the
// answer. The next server is tried on a timeout, a network error, SERVFAIL,
// REFUSED or any other rcode but NOERROR and NXDOMAIN. It never returns a
// nil entry.
func (r *DNS) resolve(ctx context.Context, fqdn string, qtype uint16) *entry {
	q := new(dns.Msg)
	q.SetQuestion(fqdn, qtype)
	q.RecursionDesired = true
	q.SetEdns0(ednsSize, false)

	var last outcome
	for _, server := range r.servers {
		if ctx.Err() != nil {
			break
		}
		resp, err := r.exchange(ctx, q, server)
		if err != nil {
			var ne net.Error
			timeout := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
			last = outcome{kind: kindTemporary, server: server, failure: err.Error(), timeout: timeout}
			if timeout {
				last.failure = "i/o timeout"
			}
			r.log.Debug("dns query failed", "name", fqdn, "qtype", dns.TypeToString[qtype], "server", server, "err", err)
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return interpret(q.Question[0], resp, server)
		}
		last = outcome{kind: kindTemporary, server: server,
			failure: fmt.Sprintf("server misbehaving: %s", rcodeString(resp.Rcode))}
		r.log.Debug("dns query failed", "name", fqdn, "qtype", dns.TypeToString[qtype], "server", server, "rcode", rcodeString(resp.Rcode))
	}
	if last.kind != kindTemporary { // no server tried: ctx ended first
		last = outcome{kind: kindTemporary, failure: "i/o timeout", timeout: true}
	}
	return &entry{outcome: last}
}

// exchange sends q to one server over UDP, and again over TCP if the
// answer comes back truncated. Each transport gets the full timeout.
func (r *DNS) exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	resp, err := r.exchangeOne(ctx, r.udp, q, server)
	if err == nil && resp.Truncated {
		resp, err = r.exchangeOne(ctx, r.tcp, q, server)
	}
	return resp, err
}

func (r *DNS) exchangeOne(ctx context.Context, c *dns.Client, q *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	resp, _, err := c.ExchangeContext(ctx, q, server)
	r.metrics.duration.Observe(time.Since(start).Seconds())
	qtype := dns.TypeToString[q.Question[0].Qtype]
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			r.metrics.queries.WithLabelValues(qtype, "TIMEOUT").Inc()
		} else {
			r.metrics.queries.WithLabelValues(qtype, "NETERROR").Inc()
		}
		return nil, err
	}
	r.metrics.queries.WithLabelValues(qtype, rcodeString(resp.Rcode)).Inc()
	// miekg/dns checks the ID; the question must match too, or this is an
	// answer to something else (RFC 5452).
	if len(resp.Question) != 1 || resp.Question[0].Qtype != q.Question[0].Qtype ||
		!strings.EqualFold(resp.Question[0].Name, q.Question[0].Name) {
		return nil, fmt.Errorf("answer for another question: %v", resp.Question)
	}
	return resp, nil
}

func rcodeString(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// interpret turns a NOERROR or NXDOMAIN response into an entry: the
// records of the type asked at the end of the CNAME chain, and how long
// the result may be cached (before clamping).
//
// Positive answers live as long as the shortest TTL among the records used
// (CNAMEs included). Negative answers live for min(SOA TTL, SOA MINIMUM)
// of the SOA in the authority section (RFC 2308 section 5), also bounded by
// the CNAMEs; without an SOA they are not cached at all (ttl 0).
func interpret(q dns.Question, resp *dns.Msg, server string) *entry {
	e := &entry{outcome: outcome{server: server}}
	owner := q.Name
	var ttl uint32 = 1<<32 - 1
	follow := q.Qtype != dns.TypeCNAME && q.Qtype != dns.TypeANY
	for hop := 0; hop <= maxCNAMEHops; hop++ {
		var cname *dns.CNAME
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, owner) {
				continue
			}
			if h.Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				e.records = append(e.records, rr)
				ttl = min(ttl, h.Ttl)
			} else if c, ok := rr.(*dns.CNAME); ok && follow && cname == nil {
				cname = c
			}
		}
		if len(e.records) > 0 || cname == nil {
			break
		}
		ttl = min(ttl, cname.Hdr.Ttl)
		owner = cname.Target
	}
	e.owner = owner

	switch {
	case len(e.records) > 0:
		e.kind = kindFound
	case resp.Rcode == dns.RcodeNameError:
		e.kind = kindNXDomain
	default:
		e.kind = kindNoData
	}
	if e.kind != kindFound {
		soaTTL, ok := negativeTTL(resp)
		ttl = min(ttl, soaTTL)
		e.noSOA = !ok
	}
	e.ttl = time.Duration(ttl) * time.Second
	return e
}

// negativeTTL is the TTL of a negative answer from the SOA in its
// authority section; ok is false without one.
func negativeTTL(resp *dns.Msg) (ttl uint32, ok bool) {
	for _, rr := range resp.Ns {
		if soa, isSOA := rr.(*dns.SOA); isSOA {
			return min(soa.Hdr.Ttl, soa.Minttl), true
		}
	}
	return 0, false
}
