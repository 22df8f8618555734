package dnstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var testZone = Zone{
	"$TTL 300",
	"example.com. IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
	`example.com. IN TXT "v=spf1 " "-all"`,
	"mail.example.com. 60 IN A 192.0.2.25",
	"mail.example.com. 60 IN AAAA 2001:db8::25",
	"www.example.com. IN CNAME mail.example.com.",
	"loop.example.com. IN CNAME loop.example.com.",
	"host.deep.example.com. IN A 192.0.2.9", // deep.example.com is an empty non-terminal
	"*.bl.example.com. IN A 127.0.0.2",
	"a\\032b%c.example.com. IN TXT \"spaced\"",
	"orphan.test. 0 IN A 192.0.2.1", // no SOA for test.
}

func exchange(t *testing.T, srv *Server, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	r, _, err := c.Exchange(m, srv.Addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestAnswers(t *testing.T) {
	srv := NewServer(t, testZone)
	tests := []struct {
		name     string
		qtype    uint16
		rcode    int
		answer   []string // RR strings expected in the answer section, in order
		soaInNs  bool
		authBits bool
	}{
		{"example.com", dns.TypeTXT, dns.RcodeSuccess, []string{"example.com.\t300\tIN\tTXT\t\"v=spf1 \" \"-all\""}, false, true},
		{"MAIL.Example.COM", dns.TypeA, dns.RcodeSuccess, []string{"mail.example.com.\t60\tIN\tA\t192.0.2.25"}, false, true},
		{"mail.example.com", dns.TypeMX, dns.RcodeSuccess, nil, true, true},
		{"nope.example.com", dns.TypeA, dns.RcodeNameError, nil, true, true},
		{"deep.example.com", dns.TypeA, dns.RcodeSuccess, nil, true, true},
		{"www.example.com", dns.TypeAAAA, dns.RcodeSuccess, []string{
			"www.example.com.\t300\tIN\tCNAME\tmail.example.com.",
			"mail.example.com.\t60\tIN\tAAAA\t2001:db8::25",
		}, false, true},
		{"www.example.com", dns.TypeCNAME, dns.RcodeSuccess, []string{"www.example.com.\t300\tIN\tCNAME\tmail.example.com."}, false, true},
		{"2.0.0.127.bl.example.com", dns.TypeA, dns.RcodeSuccess, []string{"2.0.0.127.bl.example.com.\t300\tIN\tA\t127.0.0.2"}, false, true},
		{"2.0.0.127.bl.example.com", dns.TypeTXT, dns.RcodeSuccess, nil, true, true},
		{"a b%c.example.com", dns.TypeTXT, dns.RcodeSuccess, []string{"a\\ b%c.example.com.\t300\tIN\tTXT\t\"spaced\""}, false, true},
		{"orphan.test", dns.TypeA, dns.RcodeSuccess, []string{"orphan.test.\t0\tIN\tA\t192.0.2.1"}, false, false},
		{"orphan.test", dns.TypeTXT, dns.RcodeSuccess, nil, false, false},
		{"nothing.test", dns.TypeTXT, dns.RcodeNameError, nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			r := exchange(t, srv, "udp", tt.name, tt.qtype, false)
			if r.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			var got []string
			for _, rr := range r.Answer {
				got = append(got, rr.String())
			}
			if strings.Join(got, "\n") != strings.Join(tt.answer, "\n") {
				t.Errorf("answer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.answer, "\n"))
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA &&
				r.Ns[0].Header().Name == "example.com." && r.Ns[0].(*dns.SOA).Minttl == 60
			if hasSOA != tt.soaInNs {
				t.Errorf("authority = %v, want SOA of example.com: %v", r.Ns, tt.soaInNs)
			}
			if r.Authoritative != tt.authBits {
				t.Errorf("AA = %v, want %v", r.Authoritative, tt.authBits)
			}
		})
	}
}

func TestCNAMELoopIsBounded(t *testing.T) {
	srv := NewServer(t, testZone)
	r := exchange(t, srv, "tcp", "loop.example.com", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 8 {
		t.Errorf("rcode %s, %d answers; want NOERROR and the 8 CNAMEs followed", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}

func TestHooks(t *testing.T) {
	srv := NewServer(t, testZone)

	srv.Fail("example.com", dns.RcodeServerFailure)
	if r := exchange(t, srv, "udp", "example.com", dns.TypeTXT, false); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Errorf("Fail: rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	srv.Set("example.com", dns.TypeTXT, Behavior{Rcode: dns.RcodeRefused})
	if r := exchange(t, srv, "udp", "example.com.", dns.TypeTXT, false); r.Rcode != dns.RcodeRefused {
		t.Errorf("type rule: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	if r := exchange(t, srv, "udp", "example.com.", dns.TypeSOA, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("name rule for other types: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	srv.Clear("example.com")
	if r := exchange(t, srv, "udp", "example.com", dns.TypeTXT, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("after Clear: rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}

	srv.Fail(AllNames, dns.RcodeRefused)
	if r := exchange(t, srv, "udp", "mail.example.com", dns.TypeA, false); r.Rcode != dns.RcodeRefused {
		t.Errorf("AllNames: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	srv.Clear(AllNames)

	srv.Drop("mail.example.com")
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("mail.example.com.", dns.TypeA)
	if _, _, err := c.Exchange(m, srv.Addr); err == nil {
		t.Errorf("Drop: got an answer")
	}
	srv.Clear("mail.example.com")

	srv.Delay("mail.example.com", 50*time.Millisecond)
	start := time.Now()
	if r := exchange(t, srv, "udp", "mail.example.com", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("Delay: %d answers", len(r.Answer))
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("Delay: answered after %v, before the delay", d)
	}
}

func TestTruncation(t *testing.T) {
	srv := NewServer(t, testZone)
	srv.Truncate("mail.example.com")
	r := exchange(t, srv, "udp", "mail.example.com", dns.TypeA, true)
	if !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("UDP: TC=%v, %d answers; want TC and none", r.Truncated, len(r.Answer))
	}
	if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != 1232 {
		t.Errorf("UDP: OPT record missing from truncated answer: %v", r.Extra)
	}
	r = exchange(t, srv, "tcp", "mail.example.com", dns.TypeA, true)
	if r.Truncated || len(r.Answer) != 1 {
		t.Errorf("TCP: TC=%v, %d answers; want the record", r.Truncated, len(r.Answer))
	}

	// A real answer too large for 512 bytes is truncated without EDNS0,
	// fits in 1232 bytes with it, and always fits over TCP.
	for i := range 20 {
		srv.Add(fmt.Sprintf(`big.example.com. IN TXT "%02d %s"`, i, strings.Repeat("x", 40)))
	}
	if r := exchange(t, srv, "udp", "big.example.com", dns.TypeTXT, false); !r.Truncated {
		t.Errorf("big UDP answer without EDNS0 not truncated (%d records)", len(r.Answer))
	}
	if r := exchange(t, srv, "udp", "big.example.com", dns.TypeTXT, true); r.Truncated || len(r.Answer) != 20 {
		t.Errorf("big UDP answer with EDNS0: TC=%v, %d records", r.Truncated, len(r.Answer))
	}
	if r := exchange(t, srv, "tcp", "big.example.com", dns.TypeTXT, false); r.Truncated || len(r.Answer) != 20 {
		t.Errorf("big TCP answer: TC=%v, %d records", r.Truncated, len(r.Answer))
	}
}

func TestQueriesAndLog(t *testing.T) {
	srv := NewServer(t, nil)
	srv.AddRR(&dns.TXT{
		Hdr: dns.RR_Header{Name: "x y.example.net.", Rrtype: dns.TypeTXT, Class: dns.ClassINET},
		Txt: []string{"raw"},
	})
	exchange(t, srv, "udp", "x y.example.net", dns.TypeTXT, true)
	exchange(t, srv, "tcp", "X Y.EXAMPLE.NET", dns.TypeTXT, false)
	exchange(t, srv, "udp", "x y.example.net", dns.TypeA, false)
	if r := exchange(t, srv, "udp", "x y.example.net", dns.TypeTXT, false); len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != "raw" {
		t.Errorf("record added with AddRR not served: %v", r.Answer)
	}

	for _, tt := range []struct {
		name  string
		qtype uint16
		want  int
	}{
		{"x y.example.net", dns.TypeTXT, 3},
		{`x\032y.example.net.`, dns.TypeTXT, 3},
		{"x y.example.net", 0, 4},
		{"x y.example.net", dns.TypeA, 1},
		{"other.example.net", 0, 0},
		{AllNames, 0, 4},
	} {
		if got := srv.Queries(tt.name, tt.qtype); got != tt.want {
			t.Errorf("Queries(%q, %d) = %d, want %d", tt.name, tt.qtype, got, tt.want)
		}
	}
	log := srv.Log()
	if len(log) != 4 {
		t.Fatalf("Log has %d entries, want 4", len(log))
	}
	if q := log[0]; q.Net != "udp" || q.UDPSize != 1232 || !q.RD || q.Name != `x\ y.example.net.` {
		t.Errorf("log[0] = %+v", q)
	}
	if q := log[1]; q.Net != "tcp" || q.UDPSize != 0 {
		t.Errorf("log[1] = %+v", q)
	}
	srv.ResetLog()
	if n := srv.Queries(AllNames, 0); n != 0 {
		t.Errorf("after ResetLog: %d queries", n)
	}

	srv.Remove("x y.example.net", dns.TypeTXT)
	if r := exchange(t, srv, "udp", "x y.example.net", dns.TypeTXT, false); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestParent(t *testing.T) {
	for in, want := range map[string]string{
		"a.example.com.": "example.com.",
		"com.":           ".",
		".":              "",
		`a\.b.com.`:      "com.",
	} {
		if got := parent(in); got != want {
			t.Errorf("parent(%q) = %q, want %q", in, got, want)
		}
	}
}
