package rbl

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postgate/internal/resolver"
	"postgate/internal/syncbuf"
)

const rbldnsdPath = "/usr/sbin/rbldnsd"

// rbldnsd zone data: an ip4set and an ip6trie for one IP zone, a dnset for
// a domain zone, with TXT templates ($ is the queried address or name) and
// Spamhaus-style error answers.
var rbldnsdFiles = map[string]string{
	"ip4": `:127.0.0.2:Listed, see https://bl.test/lookup?$
192.0.2.1
192.0.2.2 :127.0.0.4:Exploited host $
192.0.2.12 :127.0.0.12:Outside the filter
192.0.2.254 :127.255.255.254:Open resolver
192.0.2.255 :127.255.255.255:Too many queries
`,
	"ip6": `:127.0.0.3:IPv6 listed
2001:db8:1::/48
2001:db8:2::1 :127.255.255.254:Open resolver
`,
	"dn": `:127.0.1.2:Spam domain $
spam.example
.evil.example :127.0.1.4:Phish domain $
ip-query.example :127.0.1.255:IP queried against the DBL
`,
}

// startRbldnsd runs rbldnsd in the foreground on a free loopback port and
// returns "127.0.0.1:port" once it answers. It is stopped at cleanup.
func startRbldnsd(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(rbldnsdPath); err != nil {
		t.Skipf("rbldnsd not installed (%v): install the Debian package rbldnsd", err)
	}
	// rbldnsd drops root privileges to user rbldns, so the data must be
	// world-readable: t.TempDir is 0700.
	dir, err := os.MkdirTemp("", "postgate-rbldnsd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range rbldnsdFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The port is free when probed; another process may take it before
	// rbldnsd binds, so a start that fails is retried on a new port.
	var lastOut string
	for attempt := range 5 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, rbldnsdPath, "-n", "-b", "127.0.0.1/"+strconv.Itoa(port), "-w", dir,
			"-t", "60", "bl.test:ip4set:ip4", "bl.test:ip6trie:ip6", "dbl.test:dnset:dn")
		out := &syncbuf.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatalf("rbldnsd: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
			cancel()
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if waitAnswers(addr, exited) {
			t.Cleanup(stop)
			t.Logf("rbldnsd on %s (attempt %d)", addr, attempt+1)
			return addr
		}
		stop()
		lastOut = out.String()
	}
	t.Fatalf("rbldnsd did not start; last output:\n%s", lastOut)
	return ""
}

// waitAnswers polls addr until rbldnsd answers a listed name, for at most
// about 10 s, or until the process exits.
func waitAnswers(addr string, exited <-chan struct{}) bool {
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("1.2.0.192.bl.test.", dns.TypeA)
	for range 50 {
		select {
		case <-exited:
			return false
		default:
		}
		if r, _, err := c.Exchange(m, addr); err == nil && len(r.Answer) > 0 {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

func TestRbldnsd(t *testing.T) {
	addr := startRbldnsd(t)
	res, err := resolver.New(resolver.Options{Servers: []string{addr}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lists, err := ParseLists([]string{
		"bl.test=127.0.0.[2..11]*3",
		"sender,helo:dbl.test=127.0.1.[2..99]*2",
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	c, err := New(Options{Lists: lists, Resolver: res, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	tests := []struct {
		q      Query
		score  int
		status []Status // per list
		reason string   // TXT of the top hit, when listed
	}{
		{ip("192.0.2.1"), 3, []Status{Listed, Skipped}, "Listed, see https://bl.test/lookup?192.0.2.1"},
		{ip("192.0.2.2"), 3, []Status{Listed, Skipped}, "Exploited host 192.0.2.2"},
		{ip("192.0.2.3"), 0, []Status{NotListed, Skipped}, ""},
		{ip("192.0.2.12"), 0, []Status{NotListed, Skipped}, ""},
		{ip("192.0.2.254"), 0, []Status{ListError, Skipped}, ""},
		{ip("192.0.2.255"), 0, []Status{ListError, Skipped}, ""},
		{ip("2001:db8:1::25"), 3, []Status{Listed, Skipped}, "IPv6 listed"},
		{ip("2001:db8:3::25"), 0, []Status{NotListed, Skipped}, ""},
		{ip("2001:db8:2::1"), 0, []Status{ListError, Skipped}, ""},
		{Query{SenderDomain: "spam.example"}, 2, []Status{Skipped, Listed}, "Spam domain spam.example"},
		{Query{Helo: "mx.evil.example"}, 2, []Status{Skipped, Listed}, "Phish domain evil.example"}, // rbldnsd's $ is the listed name
		{Query{Helo: "ip-query.example"}, 0, []Status{Skipped, ListError}, ""},
		{Query{ClientIP: netip.MustParseAddr("192.0.2.1"), SenderDomain: "good.example", Helo: "evil.example"},
			5, []Status{Listed, Listed}, "Listed, see https://bl.test/lookup?192.0.2.1"},
	}
	for _, tt := range tests {
		r := c.Score(ctx, tt.q)
		// A domain list may hold one result per distinct name: a list's
		// status is Listed if any of them is, else its first.
		first := map[string]Status{}
		for _, res := range r.Results {
			if _, ok := first[res.List.Zone]; !ok || res.Status == Listed {
				first[res.List.Zone] = res.Status
			}
		}
		if r.Score != tt.score || first["bl.test"] != tt.status[0] || first["dbl.test"] != tt.status[1] {
			t.Errorf("%+v: score %d, want %d; statuses %v, want %v; %+v", tt.q, r.Score, tt.score, first, tt.status, r.Results)
			continue
		}
		hit, ok := r.TopHit()
		if ok != (tt.reason != "") {
			t.Errorf("%+v: TopHit %v", tt.q, ok)
			continue
		}
		if ok {
			if got := c.Reason(ctx, hit); got != tt.reason {
				t.Errorf("%+v: reason %q, want %q", tt.q, got, tt.reason)
			}
		}
	}
	if !strings.Contains(logs.String(), "query via public/open resolver refused by Spamhaus") ||
		!strings.Contains(logs.String(), "kind=rate_limited") || !strings.Contains(logs.String(), "kind=ip_on_domain") {
		t.Errorf("error codes not logged:\n%s", logs)
	}
	r := c.Score(ctx, ip("192.0.2.2"))
	hit, _ := r.TopHit()
	want := "554 5.7.1 Service unavailable; client [192.0.2.2] blocked using bl.test; Exploited host 192.0.2.2"
	if got := RejectText(hit, c.Reason(ctx, hit)); r.Decide(DefaultThresholds) != Reject || got != want {
		t.Errorf("reject: %v %q", r.Decide(DefaultThresholds), got)
	}
}
