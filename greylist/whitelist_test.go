package greylist

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	debianClients    = "testdata/whitelist_clients"
	debianRecipients = "testdata/whitelist_recipients"
)

func TestDebianWhitelistsLoad(t *testing.T) {
	wl, err := LoadWhitelist([]string{debianClients}, []string{debianRecipients})
	if err != nil {
		t.Fatalf("Debian postgrey whitelists: %v", err)
	}
	// Counted in the file with sed/awk: 34 regexps, 26 addresses/networks, 104 names.
	if len(wl.clientRegexps) != 34 || len(wl.clientDomains) != 104 || len(wl.clientNets) != 26 {
		t.Errorf("loaded %d regexps, %d names, %d networks, want 34, 104, 26",
			len(wl.clientRegexps), len(wl.clientDomains), len(wl.clientNets))
	}
	clients := []struct {
		ip, name string
		want     bool
	}{
		{"203.0.113.5", "mail-wr1-f41.google.com", true},    // google.com: subdomain
		{"203.0.113.5", "google.com", true},                 // google.com itself
		{"203.0.113.5", "notgoogle.com", false},             // not a subdomain
		{"203.0.113.5", "master.debian.org", true},          // Debian addition
		{"203.0.113.5", "ms-smtp-01.nyroc.rr.com", true},    // /^ms-smtp.*\.rr\.com$/
		{"203.0.113.5", "MS-SMTP-01.NYROC.RR.COM", true},    // regexps are case-insensitive
		{"203.0.113.5", "sv12pub.verizon.net", true},        // /^s[cv]\d+pub\.verizon\.net$/
		{"203.0.113.5", "smtp12-g21.free.fr", true},         // (?:...) group
		{"203.0.113.5", "x.server.arvato-systems.de", true}, // lazy quantifier
		{"203.0.113.5", "mail.example.org", false},
		{"203.0.113.5", "unknown", false},
		{"66.216.126.174", "unknown", true}, // single address
		{"66.216.126.175", "unknown", false},
		{"195.235.39.7", "unknown", true}, // "195.235.39" = /24
		{"195.235.40.7", "unknown", false},
		{"51.4.80.31", "unknown", true}, // 51.4.80.0/27
		{"51.4.80.32", "unknown", false},
		{"205.201.143.9", "unknown", true}, // 205.201.128.0/20
		{"::ffff:205.201.143.9", "unknown", true},
		{"2a01:4180:4051:800::25", "unknown", true}, // 2a01:4180:4051:0800::/64
		{"2a01:4180:4051:801::25", "unknown", false},
	}
	for _, c := range clients {
		if got := wl.MatchClient(netip.MustParseAddr(c.ip), c.name); got != c.want {
			t.Errorf("MatchClient(%s, %q) = %v, want %v", c.ip, c.name, got, c.want)
		}
	}
	for rcpt, want := range map[string]bool{
		"postmaster@example.com":     true,
		"Postmaster+x@Example.COM":   true,
		"abuse@example.net":          true,
		"user@example.com":           false,
		"postmaster.bob@example.com": false,
	} {
		if got := wl.MatchRecipient(rcpt); got != want {
			t.Errorf("MatchRecipient(%q) = %v, want %v", rcpt, got, want)
		}
	}
}

func TestClientWhitelistSyntax(t *testing.T) {
	const file = `# comment
10.1           # a.b: we take a.b.0.0/16 (postgrey: /24)
10.2.3
192.0.2.77/24  # host bits are cleared
198.51.100.7
2001:db8::/32
::ffff:203.0.113.0/120
example.com
Mail.Example.NET.
/^mx\d+\.example\.org$/
`
	wl, err := ParseClientWhitelist("clients", strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ip, name string
		want     bool
	}{
		{"10.1.200.3", "unknown", true},
		{"10.3.0.1", "unknown", false},
		{"10.2.3.9", "unknown", true},
		{"10.2.4.9", "unknown", false},
		{"::ffff:10.2.3.9", "unknown", true},
		{"192.0.2.1", "unknown", true},
		{"198.51.100.7", "unknown", true},
		{"198.51.100.8", "unknown", false},
		{"2001:db8:ffff::1", "unknown", true},
		{"2001:db9::1", "unknown", false},
		{"203.0.113.200", "unknown", true},
		{"192.0.3.1", "a.b.example.com", true},
		{"192.0.3.1", "EXAMPLE.COM.", true},
		{"192.0.3.1", "badexample.com", false},
		{"192.0.3.1", "mail.example.net", true},
		{"192.0.3.1", "x.mail.example.net", true},
		{"192.0.3.1", "example.net", false},
		{"192.0.3.1", "mx12.example.org", true},
		{"192.0.3.1", "mx12.example.org.evil", false},
		{"192.0.3.1", "", false},
	}
	for _, c := range cases {
		if got := wl.MatchClient(netip.MustParseAddr(c.ip), c.name); got != c.want {
			t.Errorf("MatchClient(%s, %q) = %v, want %v", c.ip, c.name, got, c.want)
		}
	}
}

func TestRecipientWhitelistSyntax(t *testing.T) {
	const file = `example.com
bob@
alice@example.org
@exact.example
/^list-.*@lists\.example$/
`
	wl, err := ParseRecipientWhitelist("recipients", strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	for rcpt, want := range map[string]bool{
		"a@example.com":          true,
		"a@sub.example.com":      true,
		"a@notexample.com":       false,
		"bob@anything.example":   true,
		"BOB+tag@anything":       true,
		"bobby@anything.example": false,
		"alice@example.org":      true,
		"alice+x@example.org":    true,
		"alice@example.net":      false,
		"zed@exact.example":      true,
		"zed@sub.exact.example":  false,
		"list-dev@lists.example": true,
		"LIST-dev@LISTS.example": true,
		"dev@lists.example":      false,
		"abuse@whatever.example": true,
	} {
		if got := wl.MatchRecipient(rcpt); got != want {
			t.Errorf("MatchRecipient(%q) = %v, want %v", rcpt, got, want)
		}
	}
	var nilWL *Whitelist
	if !nilWL.MatchRecipient("postmaster@example.com") || nilWL.MatchRecipient("user@example.com") {
		t.Error("nil whitelist: postmaster@ must match, others not")
	}
	if nilWL.MatchClient(netip.MustParseAddr("192.0.2.1"), "mail.example.com") {
		t.Error("nil whitelist matched a client")
	}
}

func TestWhitelistErrors(t *testing.T) {
	const clients = `ok.example
300.1.2.3
/(?<=x)y/
foo bar
1.2.3.4/40
2001:db8::/200
fe80::1%eth0
good.example
`
	_, err := ParseClientWhitelist("wl_clients", strings.NewReader(clients))
	if err == nil {
		t.Fatal("no error for bad lines")
	}
	for _, want := range []string{"wl_clients:2:", "wl_clients:3:", "wl_clients:4:", "wl_clients:5:", "wl_clients:6:", "wl_clients:7:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 6 {
		t.Errorf("got %d errors, want 6: %v", n, err)
	}

	_, err = ParseRecipientWhitelist("wl_rcpt", strings.NewReader("ok.example\n@\n/[/\n"))
	if err == nil || !strings.Contains(err.Error(), "wl_rcpt:2:") || !strings.Contains(err.Error(), "wl_rcpt:3:") {
		t.Errorf("recipient errors: %v", err)
	}

	dir := t.TempDir()
	bad := filepath.Join(dir, "clients")
	if err := os.WriteFile(bad, []byte("# header\n\nbad line here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	_, err = LoadWhitelist([]string{bad, missing}, []string{debianRecipients})
	if err == nil {
		t.Fatal("LoadWhitelist: no error")
	}
	if !strings.Contains(err.Error(), bad+":3:") {
		t.Errorf("error %q lacks %s:3:", err, bad)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file not reported: %v", err)
	}
}

func FuzzParseClientWhitelist(f *testing.F) {
	if b, err := os.ReadFile(debianClients); err == nil {
		f.Add(string(b))
	}
	f.Add("10.1\n10.2.3\n192.0.2.0/24\n2001:db8::/32\nexample.com\n/^mx\\d+$/\n")
	f.Add("foo bar\n300.1.1.1\n/(/\n::ffff:1.2.3.4/200\n")
	f.Fuzz(func(t *testing.T, file string) {
		wl, err := ParseClientWhitelist("f", strings.NewReader(file))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error without FILE:LINE: %v", err)
			}
			return
		}
		for _, ip := range []string{"192.0.2.1", "10.1.2.3", "2001:db8::1", "::ffff:10.2.3.4"} {
			wl.MatchClient(netip.MustParseAddr(ip), "mx1.example.com")
			wl.MatchClient(netip.MustParseAddr(ip), "")
		}
		wl.MatchClient(netip.Addr{}, "unknown")
	})
}

func FuzzParseRecipientWhitelist(f *testing.F) {
	if b, err := os.ReadFile(debianRecipients); err == nil {
		f.Add(string(b))
	}
	f.Add("example.com\nbob@\nalice@example.org\n@exact.example\n/^list-.*$/\n")
	f.Add("a b\n@\n/[/\n")
	f.Fuzz(func(t *testing.T, file string) {
		wl, err := ParseRecipientWhitelist("f", strings.NewReader(file))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error without FILE:LINE: %v", err)
			}
			return
		}
		for _, r := range []string{"user@example.com", "bob+x@a", "", "@", "nodomain", "postmaster@x"} {
			wl.MatchRecipient(r)
		}
		if !wl.MatchRecipient("postmaster@example.com") {
			t.Fatal("postmaster@ not whitelisted")
		}
	})
}
