package spf

import (
	"strings"
	"testing"
)

func TestParseRecordValid(t *testing.T) {
	for _, tc := range []struct {
		in    string
		terms int
		exp   string
		redir string
	}{
		{"v=spf1", 0, "", ""},
		{"V=SPF1 -ALL", 1, "", ""},
		{"v=spf1 a  -all ", 2, "", ""},
		{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip6:::ffff:1.2.3.4 -all", 4, "", ""},
		{"v=spf1 a mx/24 a//64 mx:example.com/24//64 ptr ptr:example.com ~all", 7, "", ""},
		{"v=spf1 a:foo:bar/baz.example.com", 1, "", ""},
		{"v=spf1 include:_spf.example.com ?all exp=explain.%{d} redirect=%{d2}", 2, "explain.%{d}", "%{d2}"},
		{"v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all", 2, "", ""},
		{"v=spf1 a:macro%%percent%_%_space%-url-space.example.com", 1, "", ""},
		{"v=spf1 a:example.com. a:1-2.3-4", 2, "", ""},
		{"v=spf1 moo.cow-2=%{c}%{r}%{t} foo=", 0, "", ""},
		{"v=spf1 a/0 a//0 ip4:0.0.0.0/0 ip6:::/0", 4, "", ""},
	} {
		rec, err := parseRecord(tc.in)
		if err != nil {
			t.Errorf("parseRecord(%q): %v", tc.in, err)
			continue
		}
		if len(rec.terms) != tc.terms || rec.exp != tc.exp || rec.redirect != tc.redir {
			t.Errorf("parseRecord(%q) = %d terms, exp %q, redirect %q; want %d, %q, %q",
				tc.in, len(rec.terms), rec.exp, rec.redirect, tc.terms, tc.exp, tc.redir)
		}
	}
}

func TestParseRecordTerms(t *testing.T) {
	rec, err := parseRecord("v=spf1 -a:Example.COM/24//64 ~mx ip4:192.0.2.1/16 ?ptr")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		q            byte
		name, target string
		c4, c6       int
	}{
		{'-', "a", "Example.COM", 24, 64},
		{'~', "mx", "", -1, -1},
		{'+', "ip4", "", -1, -1},
		{'?', "ptr", "", -1, -1},
	}
	for i, w := range want {
		got := rec.terms[i]
		if got.qualifier != w.q || got.name != w.name || got.target != w.target || got.cidr4 != w.c4 || got.cidr6 != w.c6 {
			t.Errorf("term %d = %+v, want %+v", i, got, w)
		}
	}
	if p := rec.terms[2].prefix.String(); p != "192.0.0.0/16" {
		t.Errorf("ip4 prefix %s, want 192.0.0.0/16 (masked)", p)
	}
}

func TestParseRecordInvalid(t *testing.T) {
	for _, in := range []string{
		"v=spf1 \x80a:example.net -all",          // non-ASCII
		"v=spf1 a:example.net \x96all",           // non-ASCII
		"v=spf1 a:ctrl.example.com\x0dptr -all",  // control character
		"v=spf1 ip4:192.0.2.5\x0a include:x.com", // LF is not a separator
		"v=spf1\ta",                              // tab
		"v=spf1 foo",                             // unknown mechanism
		"v=spf1 -exp=x.example.com",              // qualified modifier
		"v=spf1 all:x",                           // all takes nothing
		"v=spf1 include",                         // include needs a domain
		"v=spf1 include:",                        // empty domain-spec
		"v=spf1 exists",                          //
		"v=spf1 a:museum",                        // one label
		"v=spf1 a:museum.",                       // one label
		"v=spf1 a:example.123",                   // numeric top label
		"v=spf1 a:example.-com",                  // bad top label
		"v=spf1 a:example.com-",                  //
		"v=spf1 a:example.com/",                  //
		"v=spf1 a/33",                            // v4 length
		"v=spf1 a//129",                          // v6 length
		"v=spf1 a/024",                           // leading zero
		"v=spf1 mx:example.com/24/",              //
		"v=spf1 ptr/0",                           // ptr takes no length
		"v=spf1 ip4:1.2.3.4/33",                  //
		"v=spf1 ip4:1.2.3",                       //
		"v=spf1 ip4:01.2.3.4",                    // qnum leading zero
		"v=spf1 ip4:256.2.3.4",                   //
		"v=spf1 ip4:::1",                         // v6 in ip4
		"v=spf1 ip6:1.2.3.4",                     // v4 in ip6
		"v=spf1 ip6:::1.1.1.1/129",               //
		"v=spf1 ip6::CAFE::BABE",                 //
		"v=spf1 ip6:fe80::1%eth0",                // zone
		"v=spf1 ip4",                             //
		"v=spf1 redirect=a.com redirect=b.com",   // twice
		"v=spf1 exp=a.com exp=b.com",             // twice
		"v=spf1 exp=",                            // empty
		"v=spf1 redirect=example",                // one label
		"v=spf1 exists:%(ir).sbl.example.com",    // bad macro
		"v=spf1 exists:foo%.sbl.example.com",     //
		"v=spf1 exists:foo%",                     //
		"v=spf1 a:%{a}.example.com",              // undefined letter
		"v=spf1 a:%{d0}.example.com",             // zero parts
		"v=spf1 a:%{d.example.com",               // unterminated
		"v=spf1 a:%{d*}.example.com",             // bad delimiter
		"v=spf1 exists:%{c}.example.com",         // c, r, t only in exp
		"v=spf1 exp=%{r}.example.com",            //
		"v=spf1 -all 1foo=bar",                   // modifier names start with a letter
		"v=spf1 =bar",                            // empty modifier name
		"v=spf1 foo=%",                           // bad macro in unknown modifier
		"v=spf10 -all",                           // not even SPF
	} {
		if _, err := parseRecord(in); err == nil {
			t.Errorf("parseRecord(%q) succeeded, want an error", in)
		}
	}
}

func TestIsSPFRecord(t *testing.T) {
	for in, want := range map[string]bool{
		"v=spf1": true, "v=spf1 -all": true, "V=SpF1 a": true,
		"v=spf1-all": false, "v=spf10": false, "v=spf": false, " v=spf1": false,
		"spf2.0/pra -all": false,
	} {
		if got := isSPFRecord(in); got != want {
			t.Errorf("isSPFRecord(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all",
		"v=spf1 a:foo:bar/baz.example.com/24//64 mx ptr:%{d2} exists:%{ir}.%{v}.x.org",
		"v=spf1 include:a.example ip4:192.0.2.0/24 ip6:2001:db8::/32 redirect=%{o} exp=e.%{d}",
		"v=spf1 a:macro%%percent%_%_space%-url-space.example.com x=%{c}",
		"v=spf1 a//0 a/0 ~all ",
		"v=spf1 \x80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := parseRecord(s)
		if err != nil {
			return
		}
		// A record that parses is 7-bit, and its parts check again.
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				t.Fatalf("accepted %q with byte %#x", s, s[i])
			}
		}
		for _, tm := range rec.terms {
			if tm.target != "" {
				if err := checkDomainSpec(tm.target, false); err != nil {
					t.Fatalf("accepted target %q of %q: %v", tm.target, s, err)
				}
			}
			if strings.ContainsAny(tm.target, " ") {
				t.Fatalf("target with a space in %q", s)
			}
		}
	})
}
