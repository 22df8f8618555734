package rbl

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		entry   string
		targets Target
		zone    string
		filter  string
		weight  int
		canon   string
	}{
		{"zen.spamhaus.org", TargetIP, "zen.spamhaus.org", "", 1, "zen.spamhaus.org"},
		{"zen.spamhaus.org=127.0.0.[2..11]*3", TargetIP, "zen.spamhaus.org", "127.0.0.[2..11]", 3, "zen.spamhaus.org=127.0.0.[2..11]*3"},
		{"bl.spamcop.net*2", TargetIP, "bl.spamcop.net", "", 2, "bl.spamcop.net*2"},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-5", TargetIP, "list.dnswl.org", "127.0.[0..255].[1..3]", -5, "list.dnswl.org=127.0.[0..255].[1..3]*-5"},
		{"  ZEN.Spamhaus.ORG.=127.0.0.[2;3;4..7;9]  ", TargetIP, "zen.spamhaus.org", "127.0.0.[2..7;9]", 1, "zen.spamhaus.org=127.0.0.[2..7;9]"},
		{"ip:b.barracudacentral.org*0", TargetIP, "b.barracudacentral.org", "", 0, "b.barracudacentral.org*0"},
		{"sender,helo:dbl.spamhaus.org=127.0.1.[2..99]*3", TargetSender | TargetHelo, "dbl.spamhaus.org", "127.0.1.[2..99]", 3, "sender,helo:dbl.spamhaus.org=127.0.1.[2..99]*3"},
		{"domain:dbl.spamhaus.org", TargetDomain, "dbl.spamhaus.org", "", 1, "domain:dbl.spamhaus.org"},
		{"client_name,sender,helo:rhsbl.example", TargetDomain, "rhsbl.example", "", 1, "domain:rhsbl.example"},
		{"client_name:rhsbl.example=127.0.0.2", TargetClientName, "rhsbl.example", "127.0.0.2", 1, "client_name:rhsbl.example=127.0.0.2"},
		{"x.test=127.0.0.[2]", TargetIP, "x.test", "127.0.0.2", 1, "x.test=127.0.0.2"},
		{"x.test=[127].0.0.[0..255]", TargetIP, "x.test", "127.0.0.[0..255]", 1, "x.test=127.0.0.[0..255]"},
		{"_priv-1.x.test", TargetIP, "_priv-1.x.test", "", 1, "_priv-1.x.test"},
	}
	for _, tt := range tests {
		l, err := ParseList(tt.entry)
		if err != nil {
			t.Errorf("ParseList(%q): %v", tt.entry, err)
			continue
		}
		if l.Targets != tt.targets || l.Zone != tt.zone || l.Filter.String() != tt.filter || l.Weight != tt.weight {
			t.Errorf("ParseList(%q) = %v %q %q %d, want %v %q %q %d", tt.entry,
				l.Targets, l.Zone, l.Filter.String(), l.Weight, tt.targets, tt.zone, tt.filter, tt.weight)
		}
		if got := l.String(); got != tt.canon {
			t.Errorf("ParseList(%q).String() = %q, want %q", tt.entry, got, tt.canon)
		}
	}
}

func TestParseListErrors(t *testing.T) {
	tests := []struct{ entry, want string }{
		{"", "empty"},
		{"zen.spamhaus.org=127.0.0.[2..x]", `"zen.spamhaus.org=127.0.0.[2..x]": bad filter "127.0.0.[2..x]": octet 4 "[2..x]": bad value "x"`},
		{"zen.spamhaus.org=127.0.0", "want four octets, got 3"},
		{"zen.spamhaus.org=127.0.0.1.1", "want four octets, got 5"},
		{"zen.spamhaus.org=127.0.0.256", "above 255"},
		{"zen.spamhaus.org=127.0.0.[11..2]", "backwards"},
		{"zen.spamhaus.org=127.0.0.[]", "empty []"},
		{"zen.spamhaus.org=127.0.0.[2", "missing ]"},
		{"zen.spamhaus.org=127.0.0.[2;]", "bad value"},
		{"zen.spamhaus.org=127.0.0.-1", "bad value"},
		{"zen.spamhaus.org=127.0.0.0002", "bad value"},
		{"zen.spamhaus.org=", "want four octets"},
		{"zen.spamhaus.org*", "bad weight"},
		{"zen.spamhaus.org*x", "bad weight"},
		{"zen.spamhaus.org*+3", "bad weight"},
		{"zen.spamhaus.org*10001", "out of range"},
		{"zen.spamhaus.org*3*4", "character '*'"},
		{"=127.0.0.2", "missing zone"},
		{"zen..spamhaus.org", "empty label"},
		{"zen spamhaus.org", "white space"},
		{"zen.spamhaus.org=127.0.0.2=127.0.0.3", "four octets"},
		{"bad:zen.spamhaus.org", `unknown target "bad"`},
		{":zen.spamhaus.org", `unknown target ""`},
		{"ip,helo:zen.spamhaus.org", "mix the client IP"},
		{"zen.spamhaus.org/24", "character '/'"},
		{"é.example", "character"},
		{strings.Repeat("a", 64) + ".example", "longer than 63"},
		{strings.Repeat("abcdefghi.", 19) + "example", "zone longer than"},
	}
	for _, tt := range tests {
		_, err := ParseList(tt.entry)
		if err == nil {
			t.Errorf("ParseList(%q): no error, want %q", tt.entry, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseList(%q) = %q, want it to contain %q", tt.entry, err, tt.want)
		}
		if !strings.HasPrefix(err.Error(), `"`) {
			t.Errorf("ParseList(%q) = %q: error does not start by quoting the entry", tt.entry, err)
		}
	}
}

func TestParseLists(t *testing.T) {
	lists, err := ParseLists([]string{"a.test", "b.test*2"})
	if err != nil || len(lists) != 2 || lists[1].Weight != 2 {
		t.Fatalf("ParseLists = %v, %v", lists, err)
	}
	_, err = ParseLists([]string{"a.test", "b.test=1.2.3"})
	if err == nil || !strings.Contains(err.Error(), `"b.test=1.2.3"`) {
		t.Fatalf("ParseLists error = %v, want it to name the bad entry", err)
	}
}

func TestFilterMatch(t *testing.T) {
	mustList := func(s string) List {
		l, err := ParseList(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tests := []struct {
		entry, addr string
		want        bool
	}{
		{"z.test", "127.0.0.2", true},
		{"z.test", "127.1.2.3", true},
		{"z.test", "10.0.0.2", false}, // no filter: 127.0.0.0/8 only
		{"z.test", "::1", false},
		{"z.test=127.0.0.[2..11]", "127.0.0.2", true},
		{"z.test=127.0.0.[2..11]", "127.0.0.11", true},
		{"z.test=127.0.0.[2..11]", "127.0.0.12", false},
		{"z.test=127.0.0.[2..11]", "127.0.0.1", false},
		{"z.test=127.0.0.[2..11]", "127.0.1.2", false},
		{"z.test=127.0.0.[2;4;10..11]", "127.0.0.3", false},
		{"z.test=127.0.0.[2;4;10..11]", "127.0.0.4", true},
		{"z.test=127.0.0.[2;4;10..11]", "127.0.0.10", true},
		{"z.test=127.0.[0..255].[1..3]", "127.0.15.3", true},
		{"z.test=127.0.[0..255].[1..3]", "127.0.15.0", false},
		{"z.test=10.0.0.1", "10.0.0.1", true}, // the filter is exact; classify vetoes it later
	}
	for _, tt := range tests {
		if got := mustList(tt.entry).Filter.Match(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("%s matches %s = %v, want %v", tt.entry, tt.addr, got, tt.want)
		}
	}
}

func TestTargetString(t *testing.T) {
	if got := (TargetSender | TargetClientName).String(); got != "sender,client_name" {
		t.Errorf("got %q", got)
	}
	if got := Target(0).String(); got != "none" {
		t.Errorf("got %q", got)
	}
}

// FuzzParseList checks that the parser never panics, that every accepted
// entry survives a round trip through its canonical form, and that its
// filter accepts only what its octet sets hold.
func FuzzParseList(f *testing.F) {
	for _, s := range []string{
		"zen.spamhaus.org=127.0.0.[2..11]*3",
		"bl.spamcop.net*2",
		"list.dnswl.org=127.0.[0..255].[1..3]*-5",
		"sender,helo:dbl.spamhaus.org=127.0.1.[2..99]*3",
		"domain:dbl.dq.spamhaus.net",
		"z.test=127.0.0.[2;3;5..7;9]*0",
		"z.test=[127].[0..0].0.[255]",
		"z.test=127.0.0.[2..x]",
		"z.test=127.0.0.]2[",
		"a:b:c",
		"z.test*-10000",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, entry string) {
		l, err := ParseList(entry)
		if err != nil {
			if !strings.HasPrefix(err.Error(), `"`) {
				t.Fatalf("error %q does not quote the entry", err)
			}
			return
		}
		canon := l.String()
		l2, err := ParseList(canon)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", canon, entry, err)
		}
		if l2 != l {
			t.Fatalf("round trip of %q through %q changed the list: %+v != %+v", entry, canon, l2, l)
		}
		if l.Weight > MaxWeight || l.Weight < -MaxWeight || l.Targets == 0 || l.Zone == "" {
			t.Fatalf("%q parsed out of bounds: %+v", entry, l)
		}
		if l.Filter.IsZero() {
			return
		}
		// Each octet set agrees with Match on a probe address.
		probe := [4]byte{127, 0, 0, 2}
		for i := range probe {
			if l.Filter.octets[i].count() > 0 {
				for v := range 256 {
					if l.Filter.octets[i].has(uint8(v)) {
						probe[i] = byte(v)
						break
					}
				}
			}
		}
		if !l.Filter.Match(netip.AddrFrom4(probe)) {
			t.Fatalf("filter %s does not match %v built from its own sets", l.Filter, probe)
		}
	})
}
