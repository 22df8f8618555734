package rbl

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr string
		want ErrorKind
	}{
		{"127.0.0.2", ""},
		{"127.0.0.11", ""},
		{"127.0.1.2", ""},
		{"127.0.5.3", ""},
		{"127.255.254.1", ""},
		{"127.255.255.252", ErrUnsupported},
		{"127.255.255.254", ErrOpenResolver},
		{"127.255.255.255", ErrRateLimited},
		{"127.255.255.0", ErrListError},
		{"127.255.255.1", ErrListError},
		{"127.0.0.255", ErrQueryBlocked},
		{"127.0.1.255", ErrIPOnDomainList},
		{"10.0.0.2", ErrNotLoopback},
		{"192.0.2.1", ErrNotLoopback},
		{"128.0.0.2", ErrNotLoopback},
		{"::ffff:127.0.0.2", ""},
		{"2001:db8::1", ErrNotLoopback},
	}
	for _, tt := range tests {
		if got := classify(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("classify(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	for k := range errorMeanings {
		if k.Meaning() == "" {
			t.Errorf("%s has no meaning", k)
		}
	}
	if got := ErrOpenResolver.Meaning(); got[:60] != "query via public/open resolver refused by Spamhaus: use your" {
		t.Errorf("open resolver meaning: %q", got)
	}
}

func TestAnswerMeaning(t *testing.T) {
	tests := []struct{ zone, addr, want string }{
		{"zen.spamhaus.org", "127.0.0.2", "SBL: Spamhaus SBL data"},
		{"zen.spamhaus.org", "127.0.0.4", "XBL: exploited host (botnet, proxy, malware)"},
		{"zen.dq.spamhaus.net", "127.0.0.11", "PBL: dynamic/end-user range (Spamhaus maintained)"},
		{"zen.spamhaus.org", "127.0.0.99", "listed (code not documented for this list)"},
		{"dbl.spamhaus.org", "127.0.1.4", "DBL: phishing domain"},
		{"list.dnswl.org", "127.0.15.3", "DNSWL: category 15, trust high"},
		{"list.dnswl.org", "127.0.2.0", "DNSWL: category 2, trust none"},
		{"bl.spamcop.net", "127.0.0.2", "listed"},
		{"notzen.spamhaus.org", "127.0.0.2", "listed"}, // suffix only on a label boundary
	}
	for _, tt := range tests {
		if got := answerMeaning(tt.zone, netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("answerMeaning(%s, %s) = %q, want %q", tt.zone, tt.addr, got, tt.want)
		}
	}
}

func TestReverseIP(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.1", "1.2.0.192"},
		{"::ffff:192.0.2.1", "1.2.0.192"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"},
		{"2001:DB8:1234:5678:9abc:def0:1:ff", "f.f.0.0.1.0.0.0.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2"},
	}
	for _, tt := range tests {
		if got := reverseIP(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("reverseIP(%s) = %s, want %s", tt.ip, got, tt.want)
		}
	}
}

func TestNormalizeDomainAndParseQuery(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.": "example.com", " mail.example.com ": "mail.example.com", "a_b.example": "a_b.example",
	} {
		if got, ok := normalizeDomain(in); !ok || got != want {
			t.Errorf("normalizeDomain(%q) = %q %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "unknown", "localhost", "[192.0.2.1]", "192.0.2.1", "::1", "exämple.com", "a..b", "a b.com", "-"} {
		if got, ok := normalizeDomain(in); ok {
			t.Errorf("normalizeDomain(%q) = %q, want refusal", in, got)
		}
	}
	q, err := ParseQuery("192.0.2.1")
	if err != nil || q.ClientIP != netip.MustParseAddr("192.0.2.1") || q.SenderDomain != "" {
		t.Errorf("ParseQuery(ip) = %+v %v", q, err)
	}
	q, err = ParseQuery("Spam.Example")
	if err != nil || q.ClientIP.IsValid() || q.SenderDomain != "spam.example" || q.Helo != "spam.example" || q.ClientName != "spam.example" {
		t.Errorf("ParseQuery(domain) = %+v %v", q, err)
	}
	for _, bad := range []string{"", "localhost", "fe80::1%eth0", "no way"} {
		if _, err := ParseQuery(bad); err == nil {
			t.Errorf("ParseQuery(%q): no error", bad)
		}
	}
}
