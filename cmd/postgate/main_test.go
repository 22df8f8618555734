package main

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"postgate/greylist"
	"postgate/internal/dnstest"
	"postgate/internal/redistest"
	"postgate/internal/syncbuf"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[greylist]\ndb = \"g.db\"\n"), 0o644)
	if code, out, errOut := runCLI(t, "check-config", good); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("good config: %d %q %q", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[greylist]\ndb = \"g.db\"\ndelay = \"5\"\nwhitelist_clients = [\"nope\"]\n"), 0o644)
	code, _, errOut := runCLI(t, "check-config", bad)
	if code != 1 || !strings.Contains(errOut, bad+":3: greylist.delay:") || !strings.Contains(errOut, bad+":4: greylist.whitelist_clients[0]:") {
		t.Fatalf("bad config: exit %d, stderr:\n%s", code, errOut)
	}
	// A broken whitelist line is reported with its own FILE:LINE.
	wl := filepath.Join(dir, "clients")
	os.WriteFile(wl, []byte("example.org\n10.0.0.0/99\n"), 0o644)
	os.WriteFile(bad, []byte("[greylist]\ndb = \"g.db\"\nwhitelist_clients = [\"clients\"]\n"), 0o644)
	if code, _, errOut := runCLI(t, "check-config", bad); code != 1 || !strings.Contains(errOut, wl+":2") {
		t.Fatalf("bad whitelist: exit %d, stderr:\n%s", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	if code, _, errOut := runCLI(t); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("no args: %d %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code, out, _ := runCLI(t, "version"); code != 0 || !strings.HasPrefix(out, "postgate ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// With no daemon running the greylist commands open the database file.
func TestGreylistOffline(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.toml")
	os.WriteFile(cfg, []byte("[greylist]\ndb = \"g.db\"\n[admin]\nlisten = \"127.0.0.1:1\"\n"), 0o644)
	if code, _, errOut := runCLI(t, "greylist", "stats", "-config", cfg); code != 1 || !strings.Contains(errOut, "cannot be opened") {
		t.Fatalf("stats without a database: %d %q", code, errOut)
	}

	// A database with one greylisted triplet, as a stopped daemon leaves it.
	store, err := greylist.OpenBolt(filepath.Join(dir, "g.db"), greylist.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := greylist.New(store, greylist.DefaultConfig(), nil, nil)
	if v, err := g.Check(context.Background(), greylist.Input{ClientIP: netip.MustParseAddr("192.0.2.1"),
		Sender: "a@example.net", Recipient: "u@example.org"}); err != nil || v.Action != greylist.Defer {
		t.Fatalf("seed: %+v %v", v, err)
	}
	// While it is held (by a daemon whose admin API does not answer), the
	// CLI says so instead of waiting.
	if code, _, errOut := runCLI(t, "greylist", "stats", "-config", cfg); code != 1 || !strings.Contains(errOut, "locked") {
		t.Fatalf("stats on a locked database: %d %q", code, errOut)
	}
	store.Close()

	if code, out, errOut := runCLI(t, "greylist", "stats", "-config", cfg); code != 0 || !regexp.MustCompile(`(?m)^triplets\s+1$`).MatchString(out) || !regexp.MustCompile(`(?m)^pending\s+1$`).MatchString(out) {
		t.Fatalf("stats: %d %q %q", code, out, errOut)
	}
	if code, out, _ := runCLI(t, "greylist", "list", "-config", cfg); code != 0 || !strings.Contains(out, "192.0.2.0/a@example.net/u@example.org") || !strings.Contains(out, "pending") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if code, out, errOut := runCLI(t, "greylist", "whitelist", "-config", cfg, "192.0.2.7"); code != 0 || !strings.Contains(out, "192.0.2.7 auto-whitelisted") {
		t.Fatalf("whitelist: %d %q %q", code, out, errOut)
	}
	if code, out, _ := runCLI(t, "greylist", "clients", "-config", cfg); code != 0 || !strings.Contains(out, "192.0.2.7") || !strings.Contains(out, "true") {
		t.Fatalf("clients: %d\n%s", code, out)
	}
	if code, out, _ := runCLI(t, "greylist", "delete", "-config", cfg, "-client", "192.0.2.99"); code != 0 || !strings.Contains(out, "deleted 1 triplets") {
		t.Fatalf("delete: %d %q", code, out)
	}
	if code, _, errOut := runCLI(t, "greylist", "delete", "-config", cfg); code != 2 || !strings.Contains(errOut, "at least one") {
		t.Fatalf("delete without filter: %d %q", code, errOut)
	}
}

func TestDKIMGenkey(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "dkim", "genkey", "-d", "example.org", "-s", "mail", "-t", "ed25519", "-D", dir)
	if code != 0 {
		t.Fatalf("genkey: %d %q", code, errOut)
	}
	if !strings.Contains(out, "*@example.org:example.org:"+filepath.Join(dir, "mail")) || !strings.Contains(out, "mail._domainkey") {
		t.Errorf("genkey output:\n%s", out)
	}
	st, err := os.Stat(filepath.Join(dir, "mail.private"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	// The key signs through the KeyList.
	kl := filepath.Join(dir, "keylist")
	os.WriteFile(kl, []byte("*@example.org:example.org:"+filepath.Join(dir, "mail")+"\n"), 0o644)
	cfg := filepath.Join(dir, "p.toml")
	os.WriteFile(cfg, []byte("[greylist]\ndb = \"g.db\"\n[dkim]\nkeylist = \"keylist\"\n"), 0o644)
	msg := filepath.Join(dir, "msg")
	os.WriteFile(msg, []byte("From: a@example.org\r\nTo: b@example.net\r\nSubject: x\r\n\r\nhello\r\n"), 0o644)
	code, out, errOut = runCLI(t, "dkim", "sign", "-config", cfg, msg)
	if code != 0 || !strings.HasPrefix(out, "DKIM-Signature: ") || !strings.Contains(out, "d=example.org") || !strings.Contains(out, "a=ed25519-sha256") {
		t.Fatalf("sign: %d %q\n%s", code, errOut, out)
	}
	if code, _, errOut := runCLI(t, "dkim", "genkey", "-d", "example.org"); code != 2 || !strings.Contains(errOut, "-s SELECTOR") {
		t.Errorf("genkey without selector: %d %q", code, errOut)
	}
}

func TestRBLCheck(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"10.2.0.192.bl.test. 0 IN A 127.0.0.2",
		"10.2.0.192.bl.test. 0 IN TXT \"listed for spam\"",
		"11.2.0.192.bl.test. 0 IN A 127.255.255.254",
	})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "p.toml")
	os.WriteFile(cfg, []byte("[greylist]\ndb = \"g.db\"\n[dns]\nservers = [\""+dns.Addr+"\"]\n[rbl]\nlists = [\"bl.test=127.0.0.[2..11]*3\"]\n"), 0o644)

	code, out, errOut := runCLI(t, "rbl", "check", "-config", cfg, "192.0.2.10")
	if code != 0 || !strings.Contains(out, "bl.test") || !strings.Contains(out, "127.0.0.2") || !strings.Contains(out, "score 3") {
		t.Fatalf("listed: %d %q\n%s", code, errOut, out)
	}
	// An error code is shown as such, and never scores.
	code, out, _ = runCLI(t, "rbl", "check", "-config", cfg, "192.0.2.11")
	if code != 0 || !strings.Contains(out, "127.255.255.254") || !strings.Contains(out, "score 0") {
		t.Fatalf("error code: %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, "rbl", "check", "-config", cfg, "not an address!"); code == 0 {
		t.Errorf("bad argument accepted: %q", errOut)
	}
}

// A single MX grows into several: its bbolt state moves into Redis, and the
// greylist commands then read it there.
func TestGreylistMigrateToRedis(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "g.db")
	store, err := greylist.OpenBolt(db, greylist.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := greylist.New(store, greylist.DefaultConfig(), nil, nil)
	for _, ip := range []string{"192.0.2.1", "198.51.100.1"} {
		if _, err := g.Check(context.Background(), greylist.Input{ClientIP: netip.MustParseAddr(ip), Sender: "a@example.net", Recipient: "u@example.org"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.WhitelistClient(context.Background(), netip.MustParseAddr("203.0.113.9")); err != nil {
		t.Fatal(err)
	}
	store.Close()

	cfg := filepath.Join(dir, "p.toml")
	os.WriteFile(cfg, []byte("[greylist]\nstore = \"redis\"\n[greylist.redis]\naddrs = [\""+r.Addr()+"\"]\n[admin]\nlisten = \"\"\n"), 0o644)
	code, out, errOut := runCLI(t, "greylist", "migrate", "-config", cfg, "-from", "bbolt:"+db, "-to", "redis://"+r.Addr()+"/0")
	if code != 0 || !strings.Contains(out, "migrated 3 entries") {
		t.Fatalf("migrate: %d %q\n%s", code, errOut, out)
	}
	code, out, errOut = runCLI(t, "greylist", "stats", "-config", cfg)
	if code != 0 || !regexp.MustCompile(`(?m)^triplets\s+2$`).MatchString(out) || !regexp.MustCompile(`(?m)^auto-whitelisted\s+1$`).MatchString(out) {
		t.Fatalf("stats on Redis: %d %q\n%s", code, errOut, out)
	}
	if code, _, errOut := runCLI(t, "greylist", "migrate", "-config", cfg, "-from", "nowhere:x", "-to", "redis://"+r.Addr()); code == 0 || !strings.Contains(errOut, "bbolt:PATH") {
		t.Errorf("bad store spec: %d %q", code, errOut)
	}
}

// The shipped systemd unit runs commands this binary has, with the flags it
// takes: ExecStartPre checks the config, ExecStart serves it.
func TestSystemdUnitCommands(t *testing.T) {
	unit, err := os.ReadFile("../../configs/systemd/postgate.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postgate.toml")
	os.WriteFile(cfg, []byte("[policy]\nlisten = [\"inet:127.0.0.1:0\"]\n[milter]\nlisten = []\n[admin]\nlisten = \"\"\n[greylist]\ndb = \"g.db\"\n"), 0o644)
	var seen []string
	for _, line := range strings.Split(string(unit), "\n") {
		key, cmdline, ok := strings.Cut(line, "=")
		if !ok || (key != "ExecStartPre" && key != "ExecStart") {
			continue
		}
		args := strings.Fields(cmdline)
		if len(args) < 2 || args[0] != "/usr/local/bin/postgate" {
			t.Fatalf("%s does not run /usr/local/bin/postgate: %q", key, cmdline)
		}
		for i, a := range args {
			if a == "/etc/postgate/postgate.toml" {
				args[i] = cfg
			}
		}
		seen = append(seen, key)
		switch args[1] {
		case "check-config":
			if code, out, errOut := runCLI(t, args[1:]...); code != 0 {
				t.Errorf("%s: %d %q %q", key, code, out, errOut)
			}
		case "serve":
			// It serves, and stops cleanly on SIGTERM (systemctl stop).
			var errOut syncbuf.Buffer
			done := make(chan int)
			go func() { done <- run(args[1:], io.Discard, &errOut) }()
			for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errOut.String(), "postgate started"); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%s did not start:\n%s", key, errOut.String())
				}
			}
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
			if code := <-done; code != 0 || !strings.Contains(errOut.String(), "postgate stopped") {
				t.Errorf("%s: exit %d\n%s", key, code, errOut.String())
			}
		default:
			t.Errorf("%s: unknown command %q", key, args[1])
		}
	}
	if strings.Join(seen, ",") != "ExecStartPre,ExecStart" {
		t.Errorf("unit has %v", seen)
	}
}
