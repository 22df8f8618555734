package spf

import (
	"net/netip"
	"testing"
	"time"
)

func exampleEnv(ip string) *macroEnv {
	return &macroEnv{
		sender: "strong-bad@email.example.com", local: "strong-bad", domain: "email.example.com",
		cur: "email.example.com", helo: "mx.example.org", ip: netip.MustParseAddr(ip),
		receiver: "receiver.example.net", now: time.Unix(1700000000, 0),
		ptr: func(string) string { return "host.example.com" },
	}
}

// The examples of RFC 7208 section 7.4, and the other letters.
func TestExpandMacros(t *testing.T) {
	env4, env6 := exampleEnv("192.0.2.3"), exampleEnv("2001:db8::cb01")
	for _, tc := range []struct {
		env  *macroEnv
		in   string
		want string
	}{
		{env4, "%{s}", "strong-bad@email.example.com"},
		{env4, "%{o}", "email.example.com"},
		{env4, "%{d}", "email.example.com"},
		{env4, "%{d4}", "email.example.com"},
		{env4, "%{d3}", "email.example.com"},
		{env4, "%{d2}", "example.com"},
		{env4, "%{d1}", "com"},
		{env4, "%{dr}", "com.example.email"},
		{env4, "%{d2r}", "example.email"},
		{env4, "%{l}", "strong-bad"},
		{env4, "%{l-}", "strong.bad"},
		{env4, "%{lr}", "strong-bad"},
		{env4, "%{lr-}", "bad.strong"},
		{env4, "%{l1r-}", "strong"},
		{env4, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
		{env4, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
		{env4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{env4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{env4, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
		{env6, "%{ir}.%{v}._spf.%{d2}", "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com"},
		{env4, "%{h} %{p} %{c} %{r} %{t}", "mx.example.org host.example.com 192.0.2.3 receiver.example.net 1700000000"},
		{env6, "%{c}", "2001:db8::cb01"},
		{env4, "%{S}", "strong-bad%40email.example.com"},
		{env4, "%{L}%%%_%-", "strong-bad% %20"},
		{env4, "%{l+-=}", "strong.bad"},
		{env4, "%{D1000R}", "com.example.email"},
		{env4, "%{l2r-}", "bad.strong"},
	} {
		got, err := expandMacros(tc.in, true, true, tc.env)
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestURLEscape(t *testing.T) {
	if got, want := urlEscape("~jack&jill=up-a_b3.c é"), "~jack%26jill%3Dup-a_b3.c%20%C3%A9"; got != want {
		t.Errorf("urlEscape = %q, want %q", got, want)
	}
}

func TestExpandMacrosErrors(t *testing.T) {
	env := exampleEnv("192.0.2.3")
	for _, in := range []string{"%", "%x", "%{", "%{}", "%{q}", "%{d0}", "%{d*}", "%{dr r}", "a b"} {
		if got, err := expandMacros(in, false, true, env); err == nil {
			t.Errorf("expand(%q) = %q, want an error", in, got)
		}
	}
	for _, in := range []string{"%{c}", "%{r}", "%{t}"} {
		if _, err := expandMacros(in, false, false, env); err == nil {
			t.Errorf("expand(%q) outside an explanation succeeded", in)
		}
	}
}

func TestTruncateDomain(t *testing.T) {
	long := ""
	for range 30 {
		long += "abcdefghi."
	}
	long += "example.com"
	got := truncateDomain(long)
	if len(got) > 253 || got[len(got)-len("example.com"):] != "example.com" || got[0] == '.' {
		t.Errorf("truncateDomain: %d bytes %q", len(got), got)
	}
	if truncateDomain("example.com") != "example.com" {
		t.Error("short name changed")
	}
}

func FuzzExpandMacros(f *testing.F) {
	for _, s := range []string{"%{ir}.%{v}._spf.%{d2}", "%{l1r-+}", "%%%_%-", "%{S}", "connect from %{p} at %{t}", "%{D1000R}", "%"} {
		f.Add(s, "user@example.com", "192.0.2.1")
	}
	f.Fuzz(func(t *testing.T, s, sender, ip string) {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			addr = netip.MustParseAddr("192.0.2.1")
		}
		env := &macroEnv{sender: sender, local: sender, domain: sender, cur: sender, helo: sender, ip: addr}
		_, err1 := expandMacros(s, true, true, nil)
		_, err2 := expandMacros(s, true, true, env)
		// Checking and expanding agree on what is valid.
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("check %v, expand %v for %q", err1, err2, s)
		}
	})
}
