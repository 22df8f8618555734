package resolver

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestServersFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, text string
		want       []string
		err        string
	}{
		{
			name: "usual",
			text: "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53 ; v6\noptions edns0\n",
			want: []string{"192.0.2.53:53", "[2001:db8::53]:53"},
		},
		{
			name: "zone and limit",
			text: "nameserver fe80::1%eth0\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n",
			want: []string{"[fe80::1%eth0]:53", "192.0.2.1:53", "192.0.2.2:53"},
		},
		{name: "none", text: "search example.com\n", want: []string{"127.0.0.1:53", "[::1]:53"}},
		{name: "bad address", text: "\n\nnameserver dns.example.com\n", err: ":3: nameserver"},
		{name: "extra field", text: "nameserver 192.0.2.1 192.0.2.2\n", err: ":1: want"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ServersFromResolvConf(path)
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), path+tt.err) {
					t.Errorf("err = %v, want %s%s...", err, path, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("= %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := ServersFromResolvConf(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"nameserver 192.0.2.53\n",
		"nameserver ::1\nnameserver fe80::1%eth0 # c\n",
		"search a b\noptions ndots:2\n;nameserver 1.2.3.4\n",
		"nameserver\n",
		"nameserver 1.2.3.4 5.6.7.8",
		"nameserver \xff\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		servers, err := parseResolvConf("f", strings.NewReader(text))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		if len(servers) == 0 || len(servers) > maxNameservers {
			t.Errorf("%d servers", len(servers))
		}
		for _, s := range servers {
			if host, port, err := net.SplitHostPort(s); err != nil || port != "53" || host == "" {
				t.Errorf("server %q is not host:53", s)
			}
		}
	})
}

// FuzzTXTUnescape checks that a TXT string's bytes survive miekg/dns's
// presentation escaping and our unescaping.
func FuzzTXTUnescape(f *testing.F) {
	for _, s := range []string{"v=spf1 -all", `say "hi"`, `back\slash`, "\x00\xff\n", `\065`, "\\", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 255 {
			raw = raw[:255]
		}
		// One TXT character-string on the wire: length byte, then bytes.
		msg := new(dns.Msg)
		msg.SetQuestion("example.com.", dns.TypeTXT)
		wire, err := msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		rdata := append([]byte{byte(len(raw))}, raw...)
		rr := []byte{0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 0, byte(len(rdata) >> 8), byte(len(rdata))}
		wire = append(append(wire, rr...), rdata...)
		wire[7] = 1 // ANCOUNT
		if err := msg.Unpack(wire); err != nil {
			t.Fatalf("unpack: %v", err)
		}
		got := txtString(msg.Answer[0].(*dns.TXT).Txt)
		if got != string(raw) {
			t.Errorf("bytes %q came back as %q (presentation %q)", raw, got, msg.Answer[0].(*dns.TXT).Txt)
		}
	})
}

// FuzzInterpret feeds arbitrary DNS responses to the answer interpreter.
func FuzzInterpret(f *testing.F) {
	seed := func(rcode int, answer ...string) {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.Rcode = rcode
		for _, s := range answer {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		soa, _ := dns.NewRR("example. 60 IN SOA ns. h. 1 2 3 4 30")
		m.Ns = append(m.Ns, soa)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(dns.RcodeSuccess, "a.example. 5 IN A 192.0.2.1")
	seed(dns.RcodeSuccess, "a.example. 5 IN CNAME a.example.")
	seed(dns.RcodeSuccess, "a.example. 5 IN CNAME b.example.", "b.example. 9 IN A 192.0.2.1")
	seed(dns.RcodeNameError)
	f.Fuzz(func(t *testing.T, wire []byte) {
		resp := new(dns.Msg)
		if resp.Unpack(wire) != nil || len(resp.Question) != 1 {
			return
		}
		e := interpret(resp.Question[0], resp, "s")
		switch e.kind {
		case kindFound:
			for _, rr := range e.records {
				if rr.Header().Rrtype != resp.Question[0].Qtype && resp.Question[0].Qtype != dns.TypeANY {
					t.Errorf("record of another type: %v", rr)
				}
				if !strings.EqualFold(rr.Header().Name, e.owner) {
					t.Errorf("record %v not at the owner %q", rr, e.owner)
				}
			}
		case kindNXDomain, kindNoData:
			if len(e.records) != 0 {
				t.Errorf("negative entry with records")
			}
		default:
			t.Errorf("kind %d from an answer", e.kind)
		}
	})
}
