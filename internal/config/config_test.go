package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The shipped, documented configs/postgate.toml must say exactly what Default
// says: the file is the documentation of the defaults.
func TestShippedConfigIsTheDefault(t *testing.T) {
	const path = "../../configs/postgate.toml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The shipped file points at /var/lib/postgate, which need not exist here.
	data = []byte(strings.Replace(string(data), `db = "/var/lib/postgate/greylist.db"`, `db = "`+t.TempDir()+`/greylist.db"`, 1))
	got, err := Parse(path, data)
	if err != nil {
		t.Fatalf("shipped config does not load:\n%v", err)
	}
	want := Default()
	want.File = path
	want.Greylist.DB = got.Greylist.DB
	if !reflect.DeepEqual(got, want) {
		t.Errorf("configs/postgate.toml and Default() differ:\n got %+v\nwant %+v", got, want)
	}
}

func TestLocalIsValid(t *testing.T) {
	c := Local(t.TempDir())
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValues(t *testing.T) {
	dir := t.TempDir()
	wl := filepath.Join(dir, "clients")
	if err := os.WriteFile(wl, []byte("example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `
[policy]
listen = ["unix:/run/postgate/policy.sock", "inet:[::1]:10040", "127.0.0.1:10050"]
socket_mode = "0666"
socket_group = "postfix"
trusted_networks = ["192.0.2.0/24", "2001:db8::1"]
[dns]
servers = ["192.0.2.53", "[2001:db8::53]:5353"]
timeout = "1500ms"
[greylist]
delay = "1m30s"
retry_window = "2d12h"
db = "state/greylist.db"
whitelist_clients = ["clients"]
`
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(filepath.Join(dir, "postgate.toml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Policy.Listen; len(got) != 3 || got[0] != (ListenAddr{"unix", "/run/postgate/policy.sock"}) ||
		got[1] != (ListenAddr{"tcp", "[::1]:10040"}) || got[2] != (ListenAddr{"tcp", "127.0.0.1:10050"}) {
		t.Errorf("listen = %v", got)
	}
	if c.Policy.SocketMode != 0o666 || c.Policy.SocketGroup != "postfix" {
		t.Errorf("socket = %o %q", c.Policy.SocketMode, c.Policy.SocketGroup)
	}
	if got := c.Policy.TrustedNetworks; len(got) != 2 || got[1].String() != "2001:db8::1/128" {
		t.Errorf("trusted_networks = %v", got)
	}
	if c.DNS.Timeout.D() != 1500*time.Millisecond {
		t.Errorf("dns.timeout = %v", c.DNS.Timeout.D())
	}
	if c.Greylist.Delay.D() != 90*time.Second || c.Greylist.RetryWindow.D() != 60*time.Hour {
		t.Errorf("delay %v retry %v", c.Greylist.Delay.D(), c.Greylist.RetryWindow.D())
	}
	if c.Greylist.DB != filepath.Join(dir, "state/greylist.db") || c.Greylist.WhitelistClients[0] != wl {
		t.Errorf("paths not resolved against the config's directory: %q %q", c.Greylist.DB, c.Greylist.WhitelistClients)
	}
	// Keys left out keep their defaults.
	if c.Greylist.MaxAge != Default().Greylist.MaxAge || c.Admin.Listen != "127.0.0.1:10041" {
		t.Errorf("defaults lost: %+v", c)
	}
}

// Every error of a file is reported at once, each with its line and key.
func TestErrors(t *testing.T) {
	src := `[policy]
listen = "inet:127.0.0.1:10040"
trusted_networks = ["10.0.0.1/8", "nonsense"]

[greylist]
dealy = "5m"
delay = "5x"
retry_window = 300
auto_whitelist_after = -1
ipv4_prefix = 40
whitelist_clients = ["/nonexistent/whitelist_clients"]
defer_text = "wait %d seconds"

[dns]
servers = ["dns.example.com"]

[nosuchsection]
x = 1
`
	_, err := Parse("/etc/postgate/postgate.toml", []byte(src))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`/etc/postgate/postgate.toml:2: policy.listen: expected an array, got a string`,
		`/etc/postgate/postgate.toml:3: policy.trusted_networks[0]: bad network "10.0.0.1/8": host bits set (did you mean 10.0.0.0/8?)`,
		`/etc/postgate/postgate.toml:3: policy.trusted_networks[1]: bad network "nonsense": not an IP address or CIDR`,
		`/etc/postgate/postgate.toml:6: greylist.dealy: unknown key (did you mean "delay"?)`,
		`/etc/postgate/postgate.toml:7: greylist.delay: bad duration "5x": missing or unknown unit (use ms, s, m, h or d)`,
		`/etc/postgate/postgate.toml:8: greylist.retry_window: expected a string, got an integer`,
		`/etc/postgate/postgate.toml:9: greylist.auto_whitelist_after: must be 0 (disabled) or more`,
		`/etc/postgate/postgate.toml:10: greylist.ipv4_prefix: must be between 1 and 32`,
		`/etc/postgate/postgate.toml:11: greylist.whitelist_clients[0]: stat /nonexistent/whitelist_clients: no such file or directory`,
		`/etc/postgate/postgate.toml:12: greylist.defer_text: only %s (seconds left), %r (recipient domain) and %% are allowed`,
		`/etc/postgate/postgate.toml:15: dns.servers[0]: bad DNS server "dns.example.com": want an IP address with optional port ("127.0.0.1:53", "[::1]:53")`,
		`/etc/postgate/postgate.toml:17: nosuchsection: unknown key`,
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	// greylist.db's directory may or may not exist on the test machine; ignore it.
	filtered := got[:0]
	for _, g := range got {
		if !strings.Contains(g, "greylist.db:") {
			filtered = append(filtered, g)
		}
	}
	if strings.Join(filtered, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\n\nwant:\n%s", strings.Join(filtered, "\n"), strings.Join(want, "\n"))
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := Parse("p.toml", []byte("[policy]\nlisten = [\"inet:127.0.0.1:1\"\nx = \n"))
	if err == nil || !strings.HasPrefix(err.Error(), "p.toml:") {
		t.Fatalf("want a positioned syntax error, got %v", err)
	}
	_, err = Parse("p.toml", []byte("[greylist]\ndelay = \"1m\"\ndelay = \"2m\"\n"))
	if err == nil || !strings.Contains(err.Error(), "p.toml:3") {
		t.Fatalf("want duplicate key error at line 3, got %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/postgate.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "/nonexistent/postgate.toml: ") {
		t.Fatalf("got %v", err)
	}
}

func TestRetryWindowMustExceedDelay(t *testing.T) {
	dir := t.TempDir()
	_, err := Parse(filepath.Join(dir, "c.toml"), []byte("[greylist]\ndb = \"g.db\"\ndelay = \"3d\"\n"))
	if err == nil || !strings.Contains(err.Error(), "greylist.retry_window: must be longer than greylist.delay (3d)") {
		t.Fatalf("got %v", err)
	}
}

func TestDuration(t *testing.T) {
	good := map[string]time.Duration{
		"300s": 300 * time.Second, "5m": 5 * time.Minute, "2d": 48 * time.Hour,
		"1h30m": 90 * time.Minute, "500ms": 500 * time.Millisecond, "1d2h3m4s": 26*time.Hour + 3*time.Minute + 4*time.Second,
	}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, _ := ParseDuration(FormatDuration(got)); back != got {
			t.Errorf("FormatDuration(%v) = %q does not round-trip", got, FormatDuration(got))
		}
	}
	for _, in := range []string{"", "5", "m", "5x", "-5m", "5 m", "1.5h", "99999999999999999999d", "106752d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
}

func TestListenAddr(t *testing.T) {
	good := map[string]ListenAddr{
		"inet:127.0.0.1:10040":  {"tcp", "127.0.0.1:10040"},
		"127.0.0.1:10040":       {"tcp", "127.0.0.1:10040"},
		"inet:[::1]:10040":      {"tcp", "[::1]:10040"},
		"inet:localhost:1":      {"tcp", "localhost:1"},
		"unix:private/postgate": {"unix", "private/postgate"},
	}
	for in, want := range good {
		if got, err := ParseListenAddr(in); err != nil || got != want {
			t.Errorf("ParseListenAddr(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "unix:", "inet:127.0.0.1", "inet:::1:25", "inet:127.0.0.1:99999", "inet:mail.example.com:25", "/run/x.sock"} {
		if _, err := ParseListenAddr(in); err == nil {
			t.Errorf("ParseListenAddr(%q) succeeded", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	seed, _ := os.ReadFile("../../configs/postgate.toml")
	f.Add(string(seed))
	f.Add("[greylist]\ndelay = \"5m\"\n")
	f.Add("[policy]\nlisten = [1, \"x\"]\n[x.y]\nz = {a = 1}\n")
	f.Add("a.b.c = 1\n[[t]]\nx=1\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse("/fuzz/postgate.toml", []byte(s))
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "/fuzz/postgate.toml") {
					t.Fatalf("error without file: %q", e.Error())
				}
			}
			return
		}
		if c == nil {
			t.Fatal("nil config without error")
		}
	})
}
