package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"postgate/internal/testhost"
)

// TestBenchMilterOverhead measures what postgate's milter adds to each
// message through a real Postfix over TCP: N messages of about 2 KB in ONE
// SMTP session, each timed at the client from MAIL FROM to the 250 after
// the final dot, once to an smtpd whose smtpd_milters points at postgate
// (inet:127.0.0.1:PORT) and once to a copy of that smtpd with
// -o smtpd_milters= (no milter). The difference is the milter's cost.
// Two paths: signing (the shipped submission service, STARTTLS + AUTH, an
// RSA-2048 key) and verifying (the port-25 MX service, an external client
// presented with XCLIENT, messages signed by a foreign RSA-2048 key). With
// /usr/sbin/opendkim present it runs OpenDKIM over TCP on the signing path
// too, for comparison.
//
// It measures; it asserts no speed. It fails only when the measurement
// would not be real: a message refused, a signed message arriving unsigned
// (or with a signature that does not verify), an unmiltered one arriving
// signed.
//
// Run: POSTGATE_BENCH=1 go test -v -count=1 -timeout 15m -run Bench ./tests/e2e/
// Knobs: POSTGATE_BENCH_N (messages per session, 300), POSTGATE_BENCH_ROUNDS
// (sessions per service, 3), POSTGATE_BENCH_OPENDKIM=0 (leave OpenDKIM out),
// POSTGATE_BENCH_OUT=FILE (also write the report there).
func TestBenchMilterOverhead(t *testing.T) {
	if os.Getenv("POSTGATE_BENCH") != "1" {
		t.Skip("measurement, not a test: set POSTGATE_BENCH=1 to run it")
	}
	n := benchEnvInt(t, "POSTGATE_BENCH_N", 300)
	rounds := benchEnvInt(t, "POSTGATE_BENCH_ROUNDS", 3)
	const msgSize = 2048

	e := newEnv(t)
	if !e.hasSection("milter") || !e.hasSection("dkim") || e.keylistFile == "" {
		t.Skipf("postgate has no [milter]/[dkim] or the e2e instance has no signing key: %v", e.notes)
	}
	loadBefore := testhost.LoadAvg()

	// The services without a milter (and with OpenDKIM) are copies of the
	// harness's, added to master.cf after the fact and picked up by a
	// postfix reload.
	sub := benchSubmissionEntry(t, e)
	subPlain := testhost.FreePort(t)
	mxPlain := testhost.FreePort(t)
	services := []string{
		benchService(sub, subPlain, "bench-sub-nomilter", "-o smtpd_milters="),
		fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd\n  -o syslog_name=postfix/bench-mx-nomilter\n  -o smtpd_milters=\n", mxPlain),
	}
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", subPlain), fmt.Sprintf("127.0.0.1:%d", mxPlain)}

	var odkim *benchOpenDKIM
	subOD := 0
	if reason := benchOpenDKIMSkip(); reason != "" {
		t.Logf("OpenDKIM left out: %s", reason)
	} else if od, err := e.startOpenDKIM(); err != nil {
		t.Logf("OpenDKIM left out: %v", err)
	} else {
		odkim = od
		subOD = testhost.FreePort(t)
		services = append(services, benchService(sub, subOD, "bench-sub-opendkim", "-o smtpd_milters="+od.milter))
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", subOD))
	}
	added := strings.Join(services, "")
	e.addMasterServices(added, addrs)

	foreign, err := e.newForeignSigner()
	if err != nil {
		t.Fatal(err)
	}

	pgMilter := fmt.Sprintf("inet:127.0.0.1:%d", e.milterPort)
	type target struct {
		path, milter string
		port         int
		sign         bool   // submission with AUTH; else port 25 with XCLIENT
		want         string // "postgate-sign", "opendkim-sign", "verify", "none"
		rounds       int
	}
	targets := []target{
		{"sign", "postgate " + pgMilter, e.subPort, true, "postgate-sign", rounds},
		{"sign", "none (-o smtpd_milters=)", subPlain, true, "none", rounds},
		{"verify", "postgate " + pgMilter, e.mxPort, false, "verify", rounds},
		{"verify", "none (-o smtpd_milters=)", mxPlain, false, "none", rounds},
	}
	if odkim != nil {
		// One round: every message waits for the stalls, ~0.1 s each.
		targets = append(targets, target{"sign", "opendkim " + odkim.milter, subOD, true, "opendkim-sign", 1})
	}

	// Warm-up: smtpd processes spawned, postgate's DNS cache holding the
	// foreign key, TLS and the milter connections exercised once.
	for _, tg := range targets {
		if _, err := e.benchSession(tg.port, tg.sign, 10, msgSize, foreign, "warm"); err != nil {
			t.Fatalf("warm-up %s via %s: %v\n%s", tg.path, tg.milter, err, readTail(e.pfLog, 20))
		}
	}
	e.benchDrain(t)

	// Rounds alternate the order (ABAB, then BABA...) so that a drift in
	// the machine's load does not favour one side.
	results := make([][]time.Duration, len(targets))
	sessions := make([]time.Duration, len(targets))
	sizes := make([]int, len(targets))
	perRound := make([][]time.Duration, len(targets)) // p50 of each session
	for r := range rounds {
		order := []int{0, 1, 2, 3}
		if r%2 == 1 {
			order = []int{1, 0, 3, 2}
		}
		if r == 0 && odkim != nil {
			order = append(order, 4)
		}
		for _, i := range order {
			tg := targets[i]
			run, err := e.benchSession(tg.port, tg.sign, n, msgSize, foreign, fmt.Sprintf("%s%d", tg.want, r))
			if err != nil {
				t.Fatalf("%s via %s: %v\n%s", tg.path, tg.milter, err, readTail(e.pfLog, 20))
			}
			msgs, err := e.benchCollect(run.prefix, n, 2*time.Minute)
			if err != nil {
				t.Fatalf("%s via %s: %v\n%s", tg.path, tg.milter, err, readTail(e.pfLog, 20))
			}
			if err := e.benchCheck(msgs, tg.want, foreign, odkim); err != nil {
				t.Fatalf("%s via %s: the measurement is not real: %v", tg.path, tg.milter, err)
			}
			results[i] = append(results[i], run.samples...)
			sessions[i] += run.total
			sizes[i] = run.size
			perRound[i] = append(perRound[i], benchStatsOf(run.samples).p50)
		}
	}
	// One signed message of each signer through the independent verifier.
	for _, want := range []string{"postgate-sign", "opendkim-sign"} {
		if want == "opendkim-sign" && odkim == nil {
			continue
		}
		m := e.benchOne(want)
		if m == nil {
			t.Fatalf("no %s message kept for python3-dkim", want)
		}
		if err := e.pythonVerify(m.Data, e.dkimSelector, ourDomain); err != nil {
			if _, perr := pythonWithDKIM(); perr != nil {
				t.Logf("python3-dkim cross-check left out: %v", perr)
				break
			}
			t.Fatalf("%s: %v", want, err)
		}
	}
	loadAfter := testhost.LoadAvg()

	// The report.
	var b strings.Builder
	pfVersion, _ := run(10*time.Second, e.dir, "postconf", "-c", e.pfConfDir, "-h", "mail_version")
	fmt.Fprintf(&b, "postgate milter cost per message through a real Postfix over TCP\n")
	fmt.Fprintf(&b, "command: POSTGATE_BENCH=1 go test -v -count=1 -timeout 15m -run Bench ./tests/e2e/\n")
	fmt.Fprintf(&b, "machine: %d CPUs, %s %s/%s, Postfix %s, load average before %s, after %s\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, strings.TrimSpace(pfVersion), loadBefore, loadAfter)
	fmt.Fprintf(&b, "method: %d messages per SMTP session (one connection, MAIL/RCPT/DATA repeated, no pipelining),\n", n)
	fmt.Fprintf(&b, "  %d sessions per service (order alternating per round), after a 10-message warm-up session each;\n", rounds)
	fmt.Fprintf(&b, "  per message: client-side wall time from MAIL FROM to the 250 after the final dot.\n")
	fmt.Fprintf(&b, "  sign: submission service as shipped (STARTTLS, AUTH PLAIN, milter_macro_daemon_name=ORIGINATING),\n")
	fmt.Fprintf(&b, "    From: %s, key %s._domainkey.%s RSA-2048 (postgate dkim genkey), relaxed/relaxed.\n", authUser, e.dkimSelector, ourDomain)
	fmt.Fprintf(&b, "  verify: port-25 MX service (policy service at RCPT and DATA), XCLIENT ADDR=%s, messages\n", whitelistedClient)
	fmt.Fprintf(&b, "    pre-signed by %s._domainkey.%s (RSA-2048), key served by the test DNS.\n", foreign.selector, foreign.domain)
	fmt.Fprintf(&b, "  Postfix delivers to the test sink while the client sends; every message is checked at the sink\n")
	fmt.Fprintf(&b, "    (signed runs: DKIM-Signature d=%s verifies; verify runs: Authentication-Results dkim=pass;\n", ourDomain)
	fmt.Fprintf(&b, "    unmiltered runs: neither).\n")
	fmt.Fprintf(&b, "master.cf services added for the measurement (the milter ones are the harness's):\n")
	for _, line := range strings.Split(strings.TrimRight(added, "\n"), "\n") {
		fmt.Fprintf(&b, "  | %s\n", line)
	}
	if odkim != nil {
		fmt.Fprintf(&b, "opendkim: %s -f -x %s (%s)\n", odkim.bin, odkim.conf, odkim.version)
		for _, line := range strings.Split(strings.TrimRight(odkim.confText, "\n"), "\n") {
			fmt.Fprintf(&b, "  | %s\n", line)
		}
	}
	fmt.Fprintf(&b, "\n%-7s %-40s %6s %6s %8s %8s %8s %8s %8s  %s\n", "path", "milter", "bytes", "n", "mean", "p50", "p90", "p99", "max", "p50 per session")
	st := make([]benchStats, len(targets))
	for i, tg := range targets {
		st[i] = benchStatsOf(results[i])
		var rs []string
		for _, d := range perRound[i] {
			rs = append(rs, benchMs(d))
		}
		fmt.Fprintf(&b, "%-7s %-40s %6d %6d %8s %8s %8s %8s %8s  %s\n", tg.path, tg.milter, sizes[i], st[i].n,
			benchMs(st[i].mean), benchMs(st[i].p50), benchMs(st[i].p90), benchMs(st[i].p99), benchMs(st[i].max), strings.Join(rs, " "))
	}
	fmt.Fprintf(&b, "(milliseconds)\n\nadded by the milter (milter minus no milter, same path):\n")
	fmt.Fprintf(&b, "%-7s %-40s %8s %8s %8s %8s\n", "path", "milter", "mean", "p50", "p90", "p99")
	diff := func(label string, a, base int) {
		fmt.Fprintf(&b, "%-7s %-40s %8s %8s %8s %8s\n", targets[a].path, label,
			benchSignedMs(st[a].mean-st[base].mean), benchSignedMs(st[a].p50-st[base].p50),
			benchSignedMs(st[a].p90-st[base].p90), benchSignedMs(st[a].p99-st[base].p99))
	}
	diff("postgate", 0, 1)
	diff("postgate", 2, 3)
	if odkim != nil {
		diff("opendkim", 4, 1)
	}
	fmt.Fprintf(&b, "(the percentile rows are differences of percentiles, not percentiles of differences)\n")
	goal := 2 * time.Millisecond
	for _, c := range []struct {
		path    string
		a, base int
	}{{"sign", 0, 1}, {"verify", 2, 3}} {
		verdict := "met"
		if st[c.a].mean-st[c.base].mean >= goal {
			verdict = "NOT met"
		}
		fmt.Fprintf(&b, "target \"postgate adds under 2 ms per message\" (mean, %s): %s\n", c.path, verdict)
	}
	report := b.String()
	t.Log("\n" + report)
	if out := os.Getenv("POSTGATE_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Errorf("POSTGATE_BENCH_OUT: %v", err)
		}
	}
}

func benchEnvInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100000 {
		t.Fatalf("%s=%q: want a number from 1 to 100000", name, v)
	}
	return n
}

// benchSubmissionEntry is the shipped submission service as the harness
// wrote it (configs/master.cf).
func benchSubmissionEntry(t *testing.T, e *env) masterEntry {
	raw, err := os.ReadFile(filepath.Join(e.root, "configs", "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := parseMasterCF(string(raw))
	if err != nil {
		t.Fatalf("configs/%v", err)
	}
	for _, en := range entries {
		if en.Fields[0] == "submission" {
			return en
		}
	}
	t.Fatal("configs/master.cf: no submission service")
	return masterEntry{}
}

// benchService is a copy of the submission service on another port, its
// syslog_name changed and extra -o options appended (the last -o wins).
func benchService(sub masterEntry, port int, name string, extra ...string) string {
	en := masterEntry{Fields: append([]string(nil), sub.Fields...)}
	en.Fields[0] = fmt.Sprintf("127.0.0.1:%d", port)
	en.Fields[4] = "n"
	for _, c := range sub.Cont {
		if !strings.HasPrefix(strings.ReplaceAll(c, " ", ""), "-osyslog_name=") {
			en.Cont = append(en.Cont, c)
		}
	}
	en.Cont = append(en.Cont, "-o syslog_name=postfix/"+name)
	en.Cont = append(en.Cont, extra...)
	return en.String()
}

// addMasterServices appends services to the instance's master.cf and
// reloads Postfix, which opens their listeners.
func (e *env) addMasterServices(text string, addrs []string) {
	t := e.t
	f, err := os.OpenFile(filepath.Join(e.pfConfDir, "master.cf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("# --- added by bench_test.go ---\n" + text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := e.postfixCmd("check"); err != nil {
		t.Fatalf("postfix check: %v\n%s", err, out)
	}
	if out, err := e.postfixCmd("reload"); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}
	if err := waitListening(addrs, nil, 20*time.Second); err != nil {
		t.Fatalf("postfix after reload: %v\n%s", err, readTail(e.pfLog, 20))
	}
}

// --- the SMTP client ---------------------------------------------------------

// benchClient is a minimal SMTP client on one connection. Go sets
// TCP_NODELAY, so the client adds no Nagle delay of its own.
type benchClient struct {
	conn net.Conn
	tp   *textproto.Conn
}

func benchDial(addr string) (*benchClient, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	b := &benchClient{conn: c, tp: textproto.NewConn(c)}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := b.tp.ReadResponse(220); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %v", err)
	}
	return b, nil
}

func (b *benchClient) cmd(want int, format string, args ...any) error {
	_ = b.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := b.tp.Cmd(format, args...); err != nil {
		return err
	}
	if _, _, err := b.tp.ReadResponse(want); err != nil {
		verb, _, _ := strings.Cut(format, " ")
		return fmt.Errorf("%s: %v", verb, err)
	}
	return nil
}

func (b *benchClient) startTLS() error {
	if err := b.cmd(220, "STARTTLS"); err != nil {
		return err
	}
	tc := tls.Client(b.conn, &tls.Config{ServerName: ourHostname, InsecureSkipVerify: true}) // the harness's self-signed certificate
	if err := tc.Handshake(); err != nil {
		return err
	}
	b.conn, b.tp = tc, textproto.NewConn(tc)
	return nil
}

// send sends one message and returns the time from MAIL FROM to the 250
// after the final dot.
func (b *benchClient) send(from, to, msg string) (time.Duration, error) {
	start := time.Now()
	if err := b.cmd(250, "MAIL FROM:<%s>", from); err != nil {
		return 0, err
	}
	if err := b.cmd(250, "RCPT TO:<%s>", to); err != nil {
		return 0, err
	}
	if err := b.cmd(354, "DATA"); err != nil {
		return 0, err
	}
	w := b.tp.DotWriter()
	if _, err := io.WriteString(w, msg); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	if _, _, err := b.tp.ReadResponse(250); err != nil {
		return 0, fmt.Errorf("end of DATA: %v", err)
	}
	return time.Since(start), nil
}

func (b *benchClient) close() {
	_ = b.cmd(221, "QUIT")
	b.conn.Close()
}

// benchRun is one measured session.
type benchRun struct {
	prefix  string // in every message of the session, and only there
	samples []time.Duration
	total   time.Duration
	size    int // bytes of one message as sent
}

// benchSession sends n messages of about size bytes in one SMTP session:
// to the submission-style service at port with STARTTLS and AUTH when sign,
// else to a port-25-style service as an external client (XCLIENT) with
// messages signed by foreign.
func (e *env) benchSession(port int, sign bool, n, size int, foreign *foreignSigner, name string) (*benchRun, error) {
	run := &benchRun{prefix: token("bench-"+name) + "."}
	from, to := authUser, "friend@remote.example"
	client, helo := "", "bench.e2e.example"
	if !sign {
		from, to = "news@"+foreign.domain, "bob@example.org"
		client = whitelistedClient
		helo = "mail." + strings.ReplaceAll(client, ".", "-") + ".e2e.example"
	}
	// Messages are made (and signed) before the session starts, so the
	// timings hold only the SMTP exchange.
	msgs := make([]string, n)
	for i := range msgs {
		m := benchMessage(from, to, fmt.Sprintf("%s%04d", run.prefix, i), size)
		if !sign {
			var err error
			if m, err = foreign.sign(m); err != nil {
				return nil, err
			}
		}
		msgs[i] = m
	}
	run.size = len(msgs[0])

	c, err := benchDial(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.cmd(250, "EHLO %s", helo); err != nil {
		return nil, err
	}
	if sign {
		if err := c.startTLS(); err != nil {
			return nil, err
		}
		if err := c.cmd(250, "EHLO %s", helo); err != nil {
			return nil, err
		}
		cred := base64.StdEncoding.EncodeToString([]byte("\x00" + authUser + "\x00" + authPass))
		if err := c.cmd(235, "AUTH PLAIN %s", cred); err != nil {
			return nil, err
		}
	} else {
		if err := c.cmd(220, "XCLIENT ADDR=%s NAME=%s HELO=%s", client, helo, helo); err != nil {
			return nil, err
		}
		if err := c.cmd(250, "EHLO %s", helo); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	for i, m := range msgs {
		d, err := c.send(from, to, m)
		if err != nil {
			return nil, fmt.Errorf("message %d of %d: %v", i+1, n, err)
		}
		run.samples = append(run.samples, d)
	}
	run.total = time.Since(start)
	return run, nil
}

// benchMessage is a plain-text message of about size bytes carrying tok
// in a header and in the body.
func benchMessage(from, to, tok string, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: postgate bench %s\r\nDate: %s\r\nMessage-ID: <%s@bench.e2e.example>\r\nX-E2E-Token: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		from, to, tok, time.Now().Format(time.RFC1123Z), tok, tok)
	fmt.Fprintf(&b, "Token %s.\r\n", tok)
	const filler = "The quick brown fox jumps over the lazy dog while postgate signs mail. "
	for line := 0; b.Len() < size-2 && line < 1000; line++ {
		l := fmt.Sprintf("%03d %s", line, filler)
		if rest := size - 2 - b.Len(); len(l) > rest {
			l = l[:rest]
		}
		b.WriteString(strings.TrimRight(l, " ") + "\r\n")
	}
	return b.String()
}

// --- checks at the sink ------------------------------------------------------

// benchCollect waits until n messages carrying prefix have reached the sink.
func (e *env) benchCollect(prefix string, n int, timeout time.Duration) ([]*delivered, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var got []*delivered
	seen := 0
	for {
		s := e.sink
		s.mu.Lock()
		ch := s.changed
		fresh := append([]*delivered(nil), s.msgs[seen:]...)
		seen = len(s.msgs)
		s.mu.Unlock()
		for _, m := range fresh {
			if bytes.Contains(m.Data, []byte(prefix)) {
				got = append(got, m)
			}
		}
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return got, fmt.Errorf("%d of %d messages %s* delivered to the sink within %v", len(got), n, prefix, timeout)
		}
	}
}

// benchDrain waits (bounded) until Postfix's queue is empty, so that one
// session's deliveries do not run into the next session.
func (e *env) benchDrain(t *testing.T) {
	for range 600 {
		out, err := run(10*time.Second, e.dir, "postqueue", "-c", e.pfConfDir, "-j")
		if err == nil && strings.TrimSpace(out) == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("postfix queue not empty after 60s:\n%s", readTail(e.pfLog, 10))
}

// benchCheck makes sure the session measured what it claims: each message
// arrived signed by the signer (and the signature verifies), or verified
// by postgate, or untouched.
func (e *env) benchCheck(msgs []*delivered, want string, foreign *foreignSigner, od *benchOpenDKIM) error {
	e.benchKeep(want, msgs)
	lookup := func(name string) ([]string, error) {
		txt, err := e.lookupTXT(name)
		if err != nil {
			return nil, err
		}
		return []string{txt}, nil
	}
	for i, m := range msgs {
		ours := ourSignatures(m)
		var verified bool
		for _, ar := range authResults(m, "") {
			if strings.Contains(ar, "dkim=pass") && strings.Contains(ar, "header.d="+foreign.domain) {
				verified = true
			}
		}
		switch want {
		case "postgate-sign", "opendkim-sign":
			if len(ours) != 1 {
				return fmt.Errorf("message %d: want one DKIM-Signature d=%s, got %d:\n%s", i, ourDomain, len(ours), m.headerBlock())
			}
			if want == "opendkim-sign" && od != nil && !strings.Contains(m.headerBlock(), "OpenDKIM") {
				// SoftwareHeader yes: OpenDKIM adds "DKIM-Filter: OpenDKIM Filter ...".
				return fmt.Errorf("message %d: signed, but not by OpenDKIM:\n%s", i, m.headerBlock())
			}
			vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{LookupTXT: lookup})
			if err != nil {
				return fmt.Errorf("message %d: %v", i, err)
			}
			ok := false
			for _, v := range vs {
				ok = ok || (v.Err == nil && strings.EqualFold(v.Domain, ourDomain))
			}
			if !ok {
				return fmt.Errorf("message %d: the d=%s signature does not verify:\n%s", i, ourDomain, m.headerBlock())
			}
		case "verify":
			if !verified {
				return fmt.Errorf("message %d: no Authentication-Results dkim=pass header.d=%s:\n%s", i, foreign.domain, m.headerBlock())
			}
		case "none":
			if len(ours) != 0 || verified {
				return fmt.Errorf("message %d went through a milter on the service without one:\n%s", i, m.headerBlock())
			}
		}
	}
	return nil
}

// benchKept holds one delivered message per kind for the python3-dkim
// cross-check.
var benchKept = map[string]*delivered{}

func (e *env) benchKeep(want string, msgs []*delivered) {
	if len(msgs) > 0 {
		benchKept[want] = msgs[len(msgs)/2]
	}
}

func (e *env) benchOne(want string) *delivered { return benchKept[want] }

// --- statistics --------------------------------------------------------------

type benchStats struct {
	n                        int
	mean, p50, p90, p99, max time.Duration
}

func benchStatsOf(ds []time.Duration) benchStats {
	if len(ds) == 0 {
		return benchStats{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	pct := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return benchStats{n: len(s), mean: sum / time.Duration(len(s)), p50: pct(0.50), p90: pct(0.90), p99: pct(0.99), max: s[len(s)-1]}
}

func benchMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

func benchSignedMs(d time.Duration) string {
	s := benchMs(d)
	if d >= 0 {
		s = "+" + s
	}
	return s
}

// --- OpenDKIM, for comparison --------------------------------------------------

type benchOpenDKIM struct {
	bin, conf, confText, version string
	milter                       string // Postfix notation
}

const benchOpenDKIMBin = "/usr/sbin/opendkim"

func benchOpenDKIMSkip() string {
	if os.Getenv("POSTGATE_BENCH_OPENDKIM") == "0" {
		return "POSTGATE_BENCH_OPENDKIM=0"
	}
	if _, err := os.Stat(benchOpenDKIMBin); err != nil {
		return benchOpenDKIMBin + " not installed (Debian package opendkim)"
	}
	return ""
}

// startOpenDKIM runs OpenDKIM in the foreground on a TCP port, signing
// with the same key as postgate (KeyTable/SigningTable naming the key file
// postgate dkim genkey wrote).
func (e *env) startOpenDKIM() (*benchOpenDKIM, error) {
	d := e.path("opendkim")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	port := testhost.FreePort(e.t)
	keyName := e.dkimSelector + "._domainkey." + ourDomain
	keyFile := filepath.Join(e.dkimKeyDir, e.dkimSelector+".private")
	writeFile(e.t, filepath.Join(d, "keytable"), fmt.Sprintf("%s %s:%s:%s\n", keyName, ourDomain, e.dkimSelector, keyFile))
	writeFile(e.t, filepath.Join(d, "signingtable"), fmt.Sprintf("*@%s %s\n", ourDomain, keyName))
	od := &benchOpenDKIM{bin: benchOpenDKIMBin, conf: filepath.Join(d, "opendkim.conf"), milter: fmt.Sprintf("inet:127.0.0.1:%d", port)}
	od.confText = fmt.Sprintf(`Syslog no
Mode s
Socket inet:%d@127.0.0.1
PidFile %s/opendkim.pid
KeyTable file:%s/keytable
SigningTable refile:%s/signingtable
Canonicalization relaxed/relaxed
OversignHeaders From
RequireSafeKeys false
SoftwareHeader yes
`, port, d, d, d)
	writeFile(e.t, od.conf, od.confText)
	if out, err := run(10*time.Second, d, od.bin, "-V"); err == nil {
		od.version = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	}
	p, err := startProc("opendkim", filepath.Join(d, "opendkim.out"), od.bin, "-f", "-x", od.conf)
	if err != nil {
		return nil, err
	}
	e.t.Cleanup(func() { p.stop(5 * time.Second) })
	if err := waitListening([]string{fmt.Sprintf("127.0.0.1:%d", port)}, p, 15*time.Second); err != nil {
		return nil, fmt.Errorf("opendkim: %v\n%s", err, p.out.String())
	}
	return od, nil
}
