// Package dnstest runs a small authoritative DNS server on loopback for
// tests: real UDP and TCP sockets, answers from records given as zone-file
// text, and hooks to make it slow, failing, silent or truncating.
//
// Typical use:
//
//	srv := dnstest.NewServer(t, dnstest.Zone{
//		"example.com. 0 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
//		`example.com. 0 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
//		"mail.example.com. 300 IN A 192.0.2.25",
//		"*.zen.example. 60 IN A 127.0.0.2",
//	})
//	srv.Fail("broken.example.com", dns.RcodeServerFailure)
//	srv.Drop("slow.example.com") // never answered: the client times out
//	r, _ := resolver.New(resolver.Options{Servers: []string{srv.Addr}})
//	...
//	if n := srv.Queries("example.com", dns.TypeTXT); n != 1 { ... }
//
// Semantics, kept close to a real authoritative server:
//   - Records are matched by owner name case-insensitively. A record without
//     a TTL gets TTL 0 (so nothing is cached unless a test asks for it);
//     $TTL and $ORIGIN work, the initial origin is the root.
//   - A CNAME at the queried name is followed inside the server's own data
//     (up to 8 hops) for any type but CNAME, as authoritative servers do.
//   - Wildcards ("*.zone.") are expanded for names below them that do not
//     exist (RFC 4592, closest encloser).
//   - A name with no records that has names below it is an empty
//     non-terminal: NODATA, not NXDOMAIN.
//   - NXDOMAIN and NODATA answers carry the SOA of the closest enclosing zone
//     in the authority section, with the TTL written in the zone, when the
//     server has one; otherwise the authority section is empty.
//   - UDP answers larger than the client's EDNS0 buffer size (512 bytes
//     without EDNS0) are truncated with TC set, so TCP fallback can be tested
//     with real large answers as well as with [Server.Truncate].
//
// Names given to the hook and counting methods may be with or without the
// trailing dot, in any case, and may contain spaces or other bytes
// literally ("a b.example.com") or escaped ("a\032b.example.com" or
// "a\ b.example.com").
package dnstest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is zone-file text: each element is one or more lines, and the
// elements are read in order as one file, so $TTL and $ORIGIN carry over.
type Zone []string

// AllNames, given as the name to a hook method, applies the hook to every
// query the server receives (rules for a specific name take precedence).
const AllNames = ""

// Behavior says how the server misbehaves for some queries. The zero value
// answers normally.
type Behavior struct {
	// Delay postpones the answer (also a forced rcode or truncation).
	Delay time.Duration
	// Drop never answers: the client sees a timeout.
	Drop bool
	// Rcode, when not zero (NOERROR), answers with that rcode and no records.
	Rcode int
	// Truncate answers UDP queries with TC set and no records; TCP queries
	// are answered in full.
	Truncate bool
}

// Query is one query the server received.
type Query struct {
	Name    string // as sent, in presentation format (a space reads "\ ")
	Type    uint16
	Net     string // "udp" or "tcp"
	UDPSize uint16 // EDNS0 buffer size; 0 when the query had no OPT record
	RD      bool   // recursion desired
}

// Server is a running test DNS server. All methods are safe for concurrent
// use, also while queries are being answered.
type Server struct {
	// Addr is the "127.0.0.1:port" the server listens on, with UDP and TCP.
	Addr string

	t    testing.TB
	done chan struct{} // closed at cleanup: abandons pending delays

	mu        sync.Mutex
	records   map[string][]dns.RR // canonical owner name -> records in zone order
	behaviors map[ruleKey]Behavior
	log       []Query
}

type ruleKey struct {
	name  string // canonical, or AllNames
	qtype uint16 // 0 = every type
}

// NewServer starts a server answering from zone (which may be nil) on a
// fresh loopback port and stops it when the test ends. It fails the test if
// zone does not parse or the server cannot start.
func NewServer(t testing.TB, zone Zone) *Server {
	t.Helper()
	s := &Server{
		t:         t,
		done:      make(chan struct{}),
		records:   make(map[string][]dns.RR),
		behaviors: make(map[ruleKey]Behavior),
	}
	if len(zone) > 0 {
		s.Add(zone...)
	}

	pc, l := listenSamePort(t)
	s.Addr = pc.LocalAddr().String()
	udpSrv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serveUDP)}
	tcpSrv := &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serveTCP)}
	started := make(chan struct{}, 2)
	errs := make(chan error, 2)
	for _, srv := range []*dns.Server{udpSrv, tcpSrv} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errs <- srv.ActivateAndServe() }()
	}
	for range 2 {
		select {
		case <-started:
		case err := <-errs:
			t.Fatalf("dnstest: server on %s stopped at start: %v", s.Addr, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("dnstest: server on %s did not start", s.Addr)
		}
	}
	t.Cleanup(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Errors here mean a handler outlived the timeout; nothing to do
		// about it at cleanup, and the sockets are closed regardless.
		_ = udpSrv.ShutdownContext(ctx)
		_ = tcpSrv.ShutdownContext(ctx)
	})
	return s
}

// listenSamePort opens a UDP socket on a free loopback port and a TCP
// listener on the same port, retrying when the TCP port is taken.
func listenSamePort(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("dnstest: no port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

// Add parses zone-file text (as in [Zone]) and adds its records. It fails
// the test on a syntax error.
func (s *Server) Add(lines ...string) {
	s.t.Helper()
	zp := dns.NewZoneParser(strings.NewReader(strings.Join(lines, "\n")), ".", "zone")
	zp.SetDefaultTTL(0)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		s.t.Fatalf("dnstest: %v", err)
	}
	s.AddRR(rrs...)
}

// AddRR adds records. Their owner names may contain literal spaces and are
// matched case-insensitively.
func (s *Server) AddRR(rrs ...dns.RR) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		name, err := canonical(rr.Header().Name)
		if err != nil {
			s.t.Fatalf("dnstest: record %q: %v", rr.String(), err)
		}
		s.records[name] = append(s.records[name], dns.Copy(rr))
	}
}

// Remove deletes every record of qtype at name (every record, if qtype is 0).
func (s *Server) Remove(name string, qtype uint16) {
	key := s.mustCanonical(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[key] = slices.DeleteFunc(s.records[key], func(rr dns.RR) bool {
		return qtype == 0 || rr.Header().Rrtype == qtype
	})
	if len(s.records[key]) == 0 {
		delete(s.records, key)
	}
}

// Set makes the server behave as b for queries of qtype (0: any type) for
// name ([AllNames]: any name). The most specific rule wins, in this order:
// name and type, name, all names and type, all names. A zero Behavior
// removes the rule.
func (s *Server) Set(name string, qtype uint16, b Behavior) {
	key := ruleKey{qtype: qtype}
	if name != AllNames {
		key.name = s.mustCanonical(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == (Behavior{}) {
		delete(s.behaviors, key)
		return
	}
	s.behaviors[key] = b
}

// update changes the any-type rule of name in place, so that hooks combine
// (Delay then Fail: a slow failure).
func (s *Server) update(name string, f func(*Behavior)) {
	key := ruleKey{}
	if name != AllNames {
		key.name = s.mustCanonical(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.behaviors[key]
	f(&b)
	s.behaviors[key] = b
}

// Delay postpones every answer for name by d.
func (s *Server) Delay(name string, d time.Duration) {
	s.update(name, func(b *Behavior) { b.Delay = d })
}

// Fail answers every query for name with rcode (dns.RcodeServerFailure,
// dns.RcodeRefused, ...) and no records.
func (s *Server) Fail(name string, rcode int) {
	s.update(name, func(b *Behavior) { b.Rcode = rcode })
}

// Drop never answers queries for name.
func (s *Server) Drop(name string) {
	s.update(name, func(b *Behavior) { b.Drop = true })
}

// Truncate answers UDP queries for name with TC set and no records.
func (s *Server) Truncate(name string) {
	s.update(name, func(b *Behavior) { b.Truncate = true })
}

// Clear removes every rule for name (of any type).
func (s *Server) Clear(name string) {
	key := ""
	if name != AllNames {
		key = s.mustCanonical(name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.behaviors {
		if k.name == key {
			delete(s.behaviors, k)
		}
	}
}

// Queries returns how many queries of qtype (0: any type) for name the
// server has received, over UDP and TCP, answered or not. name may be
// [AllNames].
func (s *Server) Queries(name string, qtype uint16) int {
	key := ""
	if name != AllNames {
		var err error
		if key, err = canonical(name); err != nil {
			return 0 // not a name that can be sent
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.log {
		if qtype != 0 && q.Type != qtype {
			continue
		}
		if key != "" {
			if c, err := canonical(q.Name); err != nil || c != key {
				continue
			}
		}
		n++
	}
	return n
}

// Log returns every query received so far, in arrival order.
func (s *Server) Log() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// ResetLog forgets the queries received so far.
func (s *Server) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

func (s *Server) mustCanonical(name string) string {
	s.t.Helper()
	c, err := canonical(name)
	if err != nil {
		s.t.Fatalf("dnstest: name %q: %v", name, err)
	}
	return c
}

// canonical returns name as the server sees it on the wire: fully
// qualified, lower-cased, in presentation format. Packing and unpacking
// makes "a b.x" and "a\032b.x" the same key.
func canonical(name string) (string, error) {
	buf := make([]byte, 256)
	off, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return "", err
	}
	out, _, err := dns.UnpackDomainName(buf[:off], 0)
	if err != nil {
		return "", err
	}
	return strings.ToLower(out), nil
}

func (s *Server) serveUDP(w dns.ResponseWriter, r *dns.Msg) { s.serve(w, r, "udp") }
func (s *Server) serveTCP(w dns.ResponseWriter, r *dns.Msg) { s.serve(w, r, "tcp") }

func (s *Server) serve(w dns.ResponseWriter, r *dns.Msg, network string) {
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	entry := Query{Name: q.Name, Type: q.Qtype, Net: network, RD: r.RecursionDesired}
	if opt := r.IsEdns0(); opt != nil {
		entry.UDPSize = opt.UDPSize()
	}
	name, err := canonical(q.Name)
	if err != nil {
		name = strings.ToLower(q.Name)
	}

	s.mu.Lock()
	s.log = append(s.log, entry)
	b := s.behaviorLocked(name, q.Qtype)
	s.mu.Unlock()

	if b.Delay > 0 {
		timer := time.NewTimer(b.Delay)
		select {
		case <-timer.C:
		case <-s.done:
			timer.Stop()
			return
		}
	}
	if b.Drop {
		return
	}

	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = r.RecursionDesired
	if b.Rcode != dns.RcodeSuccess {
		m.Rcode = b.Rcode
	} else {
		s.answer(m, name, q.Qtype)
	}
	if network == "udp" && b.Truncate {
		m.Answer, m.Ns = nil, nil
		m.Truncated = true
	}
	if entry.UDPSize != 0 {
		m.SetEdns0(entry.UDPSize, false)
	}
	if network == "udp" {
		size := dns.MinMsgSize
		if entry.UDPSize > dns.MinMsgSize {
			size = int(entry.UDPSize)
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

func (s *Server) behaviorLocked(name string, qtype uint16) Behavior {
	for _, k := range []ruleKey{{name, qtype}, {name, 0}, {"", qtype}, {"", 0}} {
		if b, ok := s.behaviors[k]; ok {
			return b
		}
	}
	return Behavior{}
}

// answer fills m with the records for name and qtype, following CNAMEs,
// and the SOA for negative answers.
func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := name
	for hop := 0; ; hop++ {
		rrs, exists := s.lookupLocked(cur)
		if !exists {
			m.Rcode = dns.RcodeNameError
			break
		}
		var match, cname []dns.RR
		for _, rr := range rrs {
			switch t := rr.Header().Rrtype; {
			case t == qtype || qtype == dns.TypeANY:
				match = append(match, rr)
			case t == dns.TypeCNAME:
				cname = append(cname, rr)
			}
		}
		if len(match) > 0 {
			m.Answer = append(m.Answer, match...)
			m.Authoritative = s.soaLocked(cur) != nil
			return
		}
		if len(cname) == 0 || hop == 8 {
			break // NODATA (or a CNAME chain too long to follow)
		}
		m.Answer = append(m.Answer, cname[0])
		target, err := canonical(cname[0].(*dns.CNAME).Target)
		if err != nil {
			break
		}
		cur = target
	}
	if soa := s.soaLocked(cur); soa != nil {
		m.Authoritative = true
		m.Ns = append(m.Ns, soa)
	}
}

// lookupLocked returns copies of the records at name, expanding a wildcard
// if name does not exist; exists is false for a name that does not exist.
func (s *Server) lookupLocked(name string) (rrs []dns.RR, exists bool) {
	if recs, ok := s.records[name]; ok {
		return copyRRs(recs, ""), true
	}
	if s.hasDescendantLocked(name) {
		return nil, true // empty non-terminal
	}
	// RFC 4592: walk up to the closest encloser; its wildcard, if any, answers.
	for anc := parent(name); anc != ""; anc = parent(anc) {
		wild := "*." + anc
		if anc == "." {
			wild = "*."
		}
		if recs, ok := s.records[wild]; ok {
			return copyRRs(recs, name), true
		}
		if _, ok := s.records[anc]; ok || s.hasDescendantLocked(anc) {
			return nil, false
		}
	}
	return nil, false
}

func (s *Server) hasDescendantLocked(name string) bool {
	suffix := "." + name
	if name == "." {
		suffix = "."
	}
	for owner := range s.records {
		if owner != name && strings.HasSuffix(owner, suffix) {
			return true
		}
	}
	return false
}

// soaLocked returns a copy of the SOA of the closest zone enclosing name.
func (s *Server) soaLocked(name string) dns.RR {
	for n := name; n != ""; n = parent(n) {
		for _, rr := range s.records[n] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return dns.Copy(rr)
			}
		}
	}
	return nil
}

// parent returns the name one label up ("." for a TLD, "" for the root).
// Labels are split on unescaped dots.
func parent(name string) string {
	if name == "." || name == "" {
		return ""
	}
	i, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[i:]
}

func copyRRs(rrs []dns.RR, owner string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
		if owner != "" {
			out[i].Header().Name = owner
		}
	}
	return out
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("dnstest.Server(%s)", s.Addr) }
