package resolver

import (
	"net"
	"testing"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"

	"postgate/internal/dnstest"
)

var _ spf.DNSResolver = (*DNS)(nil)

// TestWithSPFLibrary checks that the SPF library reads our errors as
// intended: NXDOMAIN is "none", SERVFAIL is "temperror".
func TestWithSPFLibrary(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		soa,
		`example.com. 0 IN TXT "v=spf1 ip4:192.0.2.0/24 a:mail.example.com -all"`,
		"mail.example.com. 0 IN A 198.51.100.7",
		`broken.example.com. 0 IN TXT "v=spf1 a:dead.example.com -all"`,
	})
	srv.Fail("dead.example.com", dns.RcodeServerFailure)
	r := newResolver(t, Options{}, srv)
	for _, tt := range []struct {
		ip, sender string
		want       spf.Result
	}{
		{"192.0.2.1", "a@example.com", spf.Pass},
		{"198.51.100.7", "a@example.com", spf.Pass},
		{"203.0.113.1", "a@example.com", spf.Fail},
		{"203.0.113.1", "a@nope.example.com", spf.None},
		{"203.0.113.1", "a@broken.example.com", spf.TempError},
	} {
		res, err := spf.CheckHostWithSender(net.ParseIP(tt.ip), "helo.example", tt.sender,
			spf.WithResolver(r), spf.WithContext(t.Context()))
		if res != tt.want {
			t.Errorf("%s from %s: %s (%v), want %s", tt.sender, tt.ip, res, err, tt.want)
		}
	}
}
