package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"postgate/dkim"
	"postgate/greylist"
	"postgate/internal/admin"
	"postgate/internal/dnstest"
	"postgate/internal/redistest"
	"postgate/internal/syncbuf"
)

type testDaemon struct {
	t       *testing.T
	dir     string
	cfgPath string
	sigs    chan os.Signal
	done    chan error
	d       *Daemon
	logs    *syncbuf.Buffer
	config  string
}

func (td *testDaemon) policyAddr() string { return td.d.Addrs()[0].String() }
func (td *testDaemon) milterAddr() string { return td.d.Addrs()[1].String() }
func (td *testDaemon) adminAddr() string  { return td.d.Addrs()[2].String() }

const baseConfig = `
hostname = "mx.test"
[policy]
listen = ["inet:127.0.0.1:0"]
trusted_networks = ["127.0.0.0/8"]
[dns]
servers = ["DNS"]
[rbl]
lists = ["bl.test=127.0.0.[2..11]*3"]
[greylist]
delay = "5m"
db = "greylist.db"
whitelist_clients = ["clients"]
whitelist_recipients = ["recipients"]
GREYLIST_EXTRA
[milter]
listen = ["inet:127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
`

func startDaemon(t *testing.T) *testDaemon { return startDaemonWith(t, "") }

// startDaemonWith starts a daemon whose [greylist] section has extra lines.
func startDaemonWith(t *testing.T, greylistExtra string) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	td := &testDaemon{t: t, dir: dir, cfgPath: filepath.Join(dir, "postgate.toml"),
		sigs: make(chan os.Signal, 1), done: make(chan error, 1), logs: &syncbuf.Buffer{}}
	dns := dnstest.NewServer(t, dnstest.Zone{
		"test. 0 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60",
		"example.org. 0 IN TXT \"v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all\"",
		"spammer.test. 0 IN TXT \"v=spf1 -all\"",
		"66.100.51.198.bl.test. 0 IN A 127.0.0.2",
		"66.100.51.198.bl.test. 0 IN TXT \"spam source, see https://bl.test/198.51.100.66\"",
	})
	td.config = strings.Replace(strings.Replace(baseConfig, "DNS", dns.Addr, 1), "GREYLIST_EXTRA", greylistExtra, 1)
	td.write("postgate.toml", td.config)
	td.write("clients", "# no clients yet\n")
	td.write("recipients", "postmaster@\n")
	ready := make(chan *Daemon, 1)
	go func() {
		td.done <- Run(Options{ConfigPath: td.cfgPath, LogOutput: td.logs, Signals: td.sigs,
			Ready: func(d *Daemon) { ready <- d }})
	}()
	select {
	case td.d = <-ready:
	case err := <-td.done:
		t.Fatalf("daemon did not start: %v", err)
	}
	t.Cleanup(func() { td.stop() })
	return td
}

func (td *testDaemon) write(name, content string) {
	td.t.Helper()
	if err := os.WriteFile(filepath.Join(td.dir, name), []byte(content), 0o644); err != nil {
		td.t.Fatal(err)
	}
}

func (td *testDaemon) stop() error {
	if td.sigs == nil {
		return nil
	}
	td.sigs <- syscall.SIGTERM
	td.sigs = nil
	select {
	case err := <-td.done:
		return err
	case <-time.After(30 * time.Second):
		td.t.Fatal("daemon did not stop")
		return nil
	}
}

// ask sends one policy request on conn and returns the action.
func ask(t *testing.T, rw *bufio.ReadWriter, client, sender, rcpt string) string {
	t.Helper()
	fmt.Fprintf(rw, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=unknown\nhelo_name=mx.example.net\nsender=%s\nrecipient=%s\ninstance=%d\nqueue_id=\n\n",
		client, sender, rcpt, time.Now().UnixNano())
	if err := rw.Flush(); err != nil {
		t.Fatal(err)
	}
	line, err := rw.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if blank, _ := rw.ReadString('\n'); blank != "\n" {
		t.Fatalf("reply not terminated by an empty line: %q", blank)
	}
	return strings.TrimSuffix(strings.TrimPrefix(line, "action="), "\n")
}

func dial(t *testing.T, addr string) *bufio.ReadWriter {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
}

func TestServeReloadShutdown(t *testing.T) {
	td := startDaemon(t)
	rw := dial(t, td.policyAddr())

	if got := ask(t, rw, "192.0.2.10", "a@example.org", "u@example.com"); !strings.HasPrefix(got, "DEFER_IF_PERMIT 4.2.0 ") {
		t.Fatalf("new triplet: %q", got)
	}
	if got := ask(t, rw, "127.0.0.1", "a@example.org", "u@example.com"); got != "DUNNO" {
		t.Fatalf("trusted client: %q", got)
	}
	if got := ask(t, rw, "192.0.2.10", "a@example.org", "postmaster@example.com"); !strings.HasPrefix(got, "PREPEND Received-SPF: pass ") || !strings.Contains(got, "receiver=mx.test;") {
		t.Fatalf("whitelisted recipient: %q", got)
	}
	if got := ask(t, rw, "203.0.113.5", "x@spammer.test", "u@example.com"); got != "550 5.7.23 SPF validation failed: 203.0.113.5 is not allowed to send mail for spammer.test" {
		t.Errorf("SPF fail: %q", got)
	}
	if got := ask(t, rw, "198.51.100.66", "a@example.org", "u@example.com"); got != "554 5.7.1 Service unavailable; client [198.51.100.66] blocked using bl.test; spam source, see https://bl.test/198.51.100.66" {
		t.Errorf("DNSBL listed: %q", got)
	}
	// The log writer gathers lines for a millisecond before writing them.
	waitLog(t, td.logs, "msg=decision")
	waitLog(t, td.logs, "action=\"DEFER_IF_PERMIT 4.2.0")

	// A broken whitelist keeps the running configuration, and says where.
	td.write("clients", "192.0.2.0/33\n")
	td.sigs <- syscall.SIGHUP
	waitLog(t, td.logs, "reload failed")
	if l := td.logs.String(); !strings.Contains(l, filepath.Join(td.dir, "clients")+":1") {
		t.Errorf("reload error does not name FILE:LINE:\n%s", l)
	}
	if got := ask(t, rw, "192.0.2.11", "b@example.org", "u@example.com"); !strings.HasPrefix(got, "DEFER_IF_PERMIT") {
		t.Fatalf("after failed reload: %q", got)
	}

	// A good one takes effect on the same connection, without a restart.
	td.write("clients", "192.0.2.0/24\n")
	td.sigs <- syscall.SIGHUP
	waitLog(t, td.logs, "msg=reloaded")
	if got := ask(t, rw, "192.0.2.12", "c@example.org", "u@example.com"); !strings.HasPrefix(got, "PREPEND Received-SPF: pass") {
		t.Fatalf("whitelisted client after reload: %q", got)
	}

	// Listeners cannot change on reload: refused, old config kept.
	td.write("postgate.toml", strings.Replace(td.config, "inet:127.0.0.1:0", "inet:127.0.0.1:1", 1))
	td.sigs <- syscall.SIGHUP
	waitLog(t, td.logs, "restart postgate to apply")

	// The admin API: health, metrics and the greylist state.
	if body := httpGet(t, "http://"+td.adminAddr()+"/healthz"); strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %q", body)
	}
	metrics := httpGet(t, "http://"+td.adminAddr()+"/metrics")
	for _, m := range []string{
		`postgate_policy_requests_total{action="DEFER_IF_PERMIT",reason="greylist"}`,
		"postgate_policy_request_duration_seconds_bucket",
		"postgate_greylist_db_size_bytes",
		"postgate_greylist_db_commits_total",
	} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	c := admin.NewClient(td.adminAddr())
	st, err := c.Stats(context.Background())
	if err != nil || st.Triplets != 2 || st.Pending != 2 {
		t.Errorf("stats = %+v, %v; want 2 pending triplets", st, err)
	}
	es, err := c.ListTriplets(context.Background(), greylist.ListOptions{Contains: "a@example.org"})
	// Pool-aware greylisting: an SPF pass keys the triplet by the domain.
	if err != nil || len(es) != 1 || es[0].Network != "example.org" {
		t.Errorf("list = %+v, %v", es, err)
	}
	if n, err := c.DeleteTriplets(context.Background(), greylist.TripletFilter{Network: "example.org"}); err != nil || n != 2 {
		t.Errorf("delete = %d, %v; want 2", n, err)
	}
	if err := c.WhitelistClient(context.Background(), netip.MustParseAddr("198.51.100.7")); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, rw, "198.51.100.7", "d@example.org", "u@example.com"); !strings.HasPrefix(got, "PREPEND Received-SPF: pass") {
		t.Errorf("manually whitelisted client: %q", got)
	}

	// SIGTERM: clean stop, database closed (it opens again at once).
	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	s, err := greylist.OpenBolt(filepath.Join(td.dir, "greylist.db"), greylist.BoltOptions{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("database still locked after shutdown: %v", err)
	}
	defer s.Close()
	if err := s.CheckConsistency(); err != nil {
		t.Fatal(err)
	}
}

// While the daemon holds the database, a second one cannot start on it.
func TestDatabaseLocked(t *testing.T) {
	td := startDaemon(t)
	_, err := greylist.OpenBolt(filepath.Join(td.dir, "greylist.db"), greylist.BoltOptions{Timeout: 50 * time.Millisecond})
	if err == nil {
		t.Fatal("opened a database held by the daemon")
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postgate.toml")
	os.WriteFile(cfg, []byte("[greylist]\ndb = \"g.db\"\nwhitelist_clients = [\"missing\"]\n[policy]\nlisten = [\"inet:127.0.0.1:0\"]\n[milter]\nlisten = []\n[admin]\nlisten = \"\"\n"), 0o644)
	err := Run(Options{ConfigPath: cfg, LogOutput: io.Discard, Signals: make(chan os.Signal)})
	if err == nil || !strings.Contains(err.Error(), cfg+":3: greylist.whitelist_clients[0]") {
		t.Fatalf("got %v", err)
	}
}

func waitLog(t *testing.T, logs *syncbuf.Buffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(logs.String(), s) {
			return
		}
	}
	t.Fatalf("log never said %q:\n%s", s, logs.String())
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Two postgate hosts on one Redis share the greylist: what the first
// greylisted, the second knows; with Redis gone both fail open (DUNNO).
func TestTwoDaemonsShareRedis(t *testing.T) {
	r := redistest.Start(t)
	extra := "store = \"redis\"\n[greylist.redis]\naddrs = [\"" + r.Addr() + "\"]\ntimeout = \"100ms\"\ndial_timeout = \"100ms\""
	a, b := startDaemonWith(t, extra), startDaemonWith(t, extra)
	ra, rb := dial(t, a.policyAddr()), dial(t, b.policyAddr())

	if got := ask(t, ra, "192.0.2.10", "x@unknown.test", "u@example.com"); !strings.Contains(got, "try again in 300 seconds") {
		t.Fatalf("first attempt through A: %q", got)
	}
	// B sees the triplet A recorded: an early retry, not a new triplet.
	if got := ask(t, rb, "192.0.2.10", "x@unknown.test", "u@example.com"); !strings.HasPrefix(got, "DEFER_IF_PERMIT") {
		t.Fatalf("retry through B: %q", got)
	}
	waitLog(t, b.logs, "reason=greylist:early-retry")
	st, err := admin.NewClient(b.adminAddr()).Stats(context.Background())
	if err != nil || st.Triplets != 1 {
		t.Fatalf("stats through B: %+v %v", st, err)
	}

	r.Kill()
	start := time.Now()
	// Greylisting is skipped; the other checks still answer (here SPF's header).
	if got := ask(t, ra, "192.0.2.20", "y@unknown.test", "u@example.com"); !strings.HasPrefix(got, "PREPEND Received-SPF: none") {
		t.Fatalf("with Redis down: %q, want the mail let through (fail open)", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing open took %v", d)
	}
	waitLog(t, a.logs, "check failed; skipped\" check=greylist")
}

// A broken key or KeyList line on reload keeps the keys in force and names
// the file and line.
func TestReloadBrokenKeyList(t *testing.T) {
	td := startDaemon(t)
	keys := filepath.Join(td.dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := dkim.GenerateKey(dkim.GenerateOptions{Domain: "example.com", Selector: "mail", Dir: keys, Type: "ed25519"})
	if err != nil {
		t.Fatal(err)
	}
	td.write("keylist", k.KeyListLine+"\n")
	td.write("postgate.toml", strings.Replace(td.config, "[milter]", "[dkim]\nkeylist = \"keylist\"\n[milter]", 1))
	td.sigs <- syscall.SIGHUP
	waitLog(t, td.logs, "msg=reloaded")

	// A line whose key file does not exist; then a line that is not a rule.
	kl := filepath.Join(td.dir, "keylist")
	for i, bad := range []string{"*@example.net:example.net:" + filepath.Join(keys, "missing"), "broken-line"} {
		td.write("keylist", k.KeyListLine+"\n"+bad+"\n")
		td.sigs <- syscall.SIGHUP
		for deadline := time.Now().Add(10 * time.Second); strings.Count(td.logs.String(), "reload failed") <= i; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("reload with %q did not fail:\n%s", bad, td.logs.String())
			}
		}
		l := td.logs.String()
		if last := l[strings.LastIndex(l, "reload failed"):]; !strings.Contains(last, kl+":2") {
			t.Errorf("reload error for %q does not name %s:2:\n%s", bad, kl, l)
		}
	}
	// The daemon still answers, with the configuration it had.
	if got := ask(t, dial(t, td.policyAddr()), "127.0.0.1", "a@example.com", "u@example.com"); got != "DUNNO" {
		t.Errorf("after a failed reload: %q", got)
	}
}

// TestLibraryLogsReachTheLog: go-milter reports a broken session through
// the standard log package; the line lands in the daemon's log as a
// warning, and the standard logger is given back when the daemon stops.
func TestLibraryLogsReachTheLog(t *testing.T) {
	before := stdlog.Writer()
	td := startDaemon(t)
	c, err := net.Dial("tcp", td.milterAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	optneg := []byte{0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0x1f, 0xff, 0xff}
	if _, err := c.Write(optneg); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("no OPTNEG reply: %v", err)
	}
	if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[:]))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0, 0, 0, 1, 'Z'}); err != nil { // no such command
		t.Fatal(err)
	}
	waitLog(t, td.logs, `level=WARN msg=library err="Unrecognized command code: Z"`)
	if err := td.stop(); err != nil {
		t.Fatal(err)
	}
	if stdlog.Writer() != before {
		t.Error("the standard logger still writes to the daemon's log after it stopped")
	}
}
