package e2e

import (
	"fmt"

	"github.com/miekg/dns"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const rblZone = "bl.e2e.example"

// whitelistedClient is in the whitelist_clients file from the start: mail
// from it is not greylisted, so the DKIM and reload scenarios need not wait.
const whitelistedClient = "203.0.113.200"

var tokenSeq atomic.Int64

// token is a unique marker for one message, so the sink can find it.
func token(name string) string {
	return fmt.Sprintf("%s-%d-%d", name, time.Now().UnixNano()%1e9, tokenSeq.Add(1))
}

func (s *sc) send(o sendOpts) sendResult {
	s.Helper()
	r, err := s.e.send(o)
	if err != nil {
		s.fail("%v", err)
	}
	return r
}

// isGreylisted reports a temporary rejection carrying postgate's 4.2.0.
func isGreylisted(r sendResult) bool {
	return !r.accepted && r.code/100 == 4 && strings.Contains(r.reply, "4.2.0")
}

// delivered waits for the message carrying tok at the sink.
func (s *sc) delivered(tok string) *delivered {
	s.Helper()
	m, err := s.e.sink.wait(tok, 20*time.Second)
	if err != nil {
		s.fail("%v\n%s", err, readTail(s.e.pfLog, 15))
	}
	return m
}

// mxFrom is a message to our domain over the MX service from an external
// client presented with XCLIENT.
func (e *env) mxFrom(client, from, to string) sendOpts {
	name := "mail." + strings.ReplaceAll(client, ".", "-") + ".e2e.example"
	return sendOpts{port: e.mxPort, clientAddr: client, clientName: name, helo: name, from: from, to: to}
}

var xGreylistRe = regexp.MustCompile(`^delayed (\d+) seconds by postgate-\S+`)

func scenarioGreylisting(s *sc) {
	e := s.e
	// Triplet A goes through the MX service that also calls postgate at
	// DATA (the optional smtpd_data_restrictions of configs/main.cf), so
	// that it gets every header postgate has for it: X-Greylist, and
	// Received-SPF when [spf] is on. Triplet B goes through the MX service
	// with only the RCPT-stage call, as shipped.
	o := e.mxFrom("192.0.2.10", "alice@grey.e2e.example", "bob@example.org")
	o.port = e.mxDataPort
	oB := e.mxFrom("192.0.2.12", "erin@grey.e2e.example", "bob@example.org")

	o.token = token("grey-first")
	first := time.Now()
	r := s.send(o)
	s.check(isGreylisted(r), "first attempt: want a 4xx with 4.2.0, got %v", r)
	oB.token = token("grey-first")
	r = s.send(oB)
	s.check(isGreylisted(r), "first attempt (RCPT-only service): want a 4xx with 4.2.0, got %v", r)

	o.token = token("grey-early")
	r = s.send(o)
	if time.Since(first) >= greyDelay {
		s.fail("the retry before the delay took longer than the %v delay: cannot check it", greyDelay)
	}
	s.check(isGreylisted(r), "retry before the delay: want a 4xx with 4.2.0, got %v", r)

	// Retry after the delay, a few times at most (the daemon may round).
	time.Sleep(time.Until(first.Add(greyDelay + 300*time.Millisecond)))
	retry := func(o sendOpts) (sendResult, string) {
		var r sendResult
		for attempt := 0; ; attempt++ {
			o.token = token("grey-pass")
			r = s.send(o)
			if r.accepted || attempt == 4 {
				return r, o.token
			}
			time.Sleep(time.Second)
		}
	}
	r, tok := retry(o)
	if !r.accepted {
		s.fail("retry after the %v delay: still not accepted after 5 attempts: %v", greyDelay, r)
	}
	m := s.delivered(tok)
	xgs := m.header()["X-Greylist"]
	if len(xgs) != 1 {
		s.check(false, "first message after the delay: want one X-Greylist: delayed N seconds by postgate-..., got %q in\n%s", xgs, m.headerBlock())
	} else if sm := xGreylistRe.FindStringSubmatch(xgs[0]); sm == nil {
		s.check(false, "first message after the delay: want X-Greylist: delayed N seconds by postgate-..., got %q", xgs[0])
	} else if n, _ := strconv.Atoi(sm[1]); n < int(greyDelay/time.Second) {
		s.check(false, "X-Greylist says delayed %d seconds, less than the %v delay: %q", n, greyDelay, xgs[0])
	}
	if e.hasSection("spf") {
		s.check(len(m.header()["Received-Spf"]) == 1, "with the DATA-stage call the message must carry Received-SPF too (configs/main.cf: \"gets both\"):\n%s", m.headerBlock())
	}
	for _, early := range []string{"grey-first", "grey-early"} {
		s.check(len(e.sink.find(early)) == 0, "a deferred attempt (%s) was delivered", early)
	}

	// The RCPT-only service: accepted after the delay; Postfix takes one
	// PREPEND per reply, so one of postgate's headers, never a duplicate.
	r, tok = retry(oB)
	if !r.accepted {
		s.fail("retry after the delay (RCPT-only service): not accepted: %v", r)
	}
	m = s.delivered(tok)
	h := m.header()
	nx, ns := len(h["X-Greylist"]), len(h["Received-Spf"])
	s.check(nx <= 1 && ns <= 1 && nx+ns >= 1, "RCPT-only service: want one X-Greylist or Received-SPF, got %d and %d:\n%s", nx, ns, m.headerBlock())
	if e.dataStageShipped {
		// configs/main.cf as shipped calls postgate at DATA as well: both.
		s.check(nx == 1 && (ns == 1 || !e.hasSection("spf")), "configs/main.cf as shipped: want X-Greylist and Received-SPF, got %d and %d:\n%s", nx, ns, m.headerBlock())
	} else if nx == 0 {
		s.Logf("note: with only the RCPT-stage call (configs/main.cf as shipped) the first message after the delay has no X-Greylist (Received-SPF won)")
	}

	// Another triplet (same client, other recipient) is still greylisted.
	o2 := e.mxFrom("192.0.2.10", "alice@grey.e2e.example", "carol@example.org")
	o2.token = token("grey-other")
	r = s.send(o2)
	s.check(isGreylisted(r), "another triplet of the same client: want 4.2.0 greylisting, got %v", r)

	// An authenticated submission is never greylisted.
	tok = token("grey-auth")
	r = s.send(sendOpts{port: e.subPort, auth: true, from: authUser, to: "dave@example.org", token: tok})
	if !r.accepted {
		s.fail("authenticated submission: want accepted at the first attempt, got %v\n%s", r, r.out)
	}
	m = s.delivered(tok)
	s.check(m.header().Get("X-Greylist") == "", "authenticated submission got an X-Greylist header: %q", m.header().Get("X-Greylist"))

	// postgate logs one decision line per request.
	log := e.postgateLog()
	s.check(countLines(log, "msg=decision", "192.0.2.10") >= 3, "postgate logged fewer than 3 msg=decision lines for client 192.0.2.10:\n%s", tail(log, 10))
}

func countLines(log string, subs ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(line, sub)
		}
		if ok {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// untilAccepted resends (a new token each time) until the message is
// accepted, for mail that first has to get through greylisting. Bounded.
func (s *sc) untilAccepted(o sendOpts, name string) (sendResult, string) {
	s.Helper()
	deadline := time.Now().Add(greyDelay + 8*time.Second)
	for {
		o.token = token(name)
		r := s.send(o)
		if r.accepted || !isGreylisted(r) || time.Now().After(deadline) {
			return r, o.token
		}
		time.Sleep(time.Second)
	}
}

func scenarioSPF(s *sc) {
	s.needs("spf")
	e := s.e
	e.dns.Add(`spf-fail.e2e.example. 60 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"`)

	// -all domain, client not listed: 550 5.7.23 at RCPT.
	o := e.mxFrom("203.0.113.23", "alice@spf-fail.e2e.example", "bob@example.org")
	o.token = token("spf-fail")
	r := s.send(o)
	s.check(!r.accepted && r.code == 550 && strings.Contains(r.reply, "5.7.23"),
		"SPF fail: want 550 5.7.23, got %v", r)
	s.check(strings.Contains(strings.ToLower(r.reply), "spf"), "SPF fail reply explains nothing about SPF: %q", r.reply)

	// Pass: through greylisting (the DATA-stage policy call of the second
	// MX service hands out the second header), delivered with Received-SPF.
	o = e.mxFrom("198.51.100.23", "bob@spf-fail.e2e.example", "carol@example.org")
	o.port = e.mxDataPort
	r, tok := s.untilAccepted(o, "spf-pass")
	if !r.accepted {
		s.fail("SPF pass: not accepted: %v", r)
	}
	m := s.delivered(tok)
	rs := m.header().Get("Received-SPF")
	s.check(strings.HasPrefix(strings.ToLower(rs), "pass") && strings.Contains(rs, "identity=mailfrom"),
		"SPF pass: want Received-SPF: pass ... identity=mailfrom, got %q in\n%s", rs, m.headerBlock())
}

func scenarioDNSBL(s *sc) {
	s.needs("rbl")
	e := s.e
	reason := "Listed by the e2e test list, see https://bl.e2e.example/203.0.113.66"
	e.dns.Add(
		rblZone+". 60 IN SOA ns."+rblZone+". hostmaster."+rblZone+". 1 3600 600 86400 60",
		"66.113.0.203."+rblZone+". 60 IN A 127.0.0.2",
		`66.113.0.203.`+rblZone+`. 60 IN TXT "`+reason+`"`,
		"67.113.0.203."+rblZone+". 60 IN A 127.255.255.254",
	)
	o := e.mxFrom("203.0.113.66", "someone@remote.example", "bob@example.org")
	o.token = token("rbl-listed")
	r := s.send(o)
	want := "Service unavailable; client [203.0.113.66] blocked using " + rblZone + "; " + reason
	s.check(!r.accepted && r.code == 554 && strings.Contains(r.reply, "5.7.1") &&
		strings.Contains(strings.ToLower(r.reply), strings.ToLower(want)),
		"listed client: want 554 5.7.1 %s, got %v", want, r)

	// 127.255.255.254 is the "public resolver" error code, never a listing.
	o = e.mxFrom("203.0.113.67", "someone@remote.example", "bob@example.org")
	o.token = token("rbl-error-code")
	r = s.send(o)
	s.check(r.accepted || r.code/100 == 4, "client answered 127.255.255.254: want not rejected (accepted or greylisted), got %v", r)
	// Not rejected because the answer was understood, not because nobody asked.
	for _, q := range []string{"66.113.0.203." + rblZone, "67.113.0.203." + rblZone} {
		s.check(e.dns.Queries(q, dns.TypeA) > 0, "postgate never queried %s A", q)
	}
}

// scenarioPostgateDown stops postgate: Postfix must apply the policy
// service's default_action (DUNNO) and milter_default_action (accept), so
// nothing is lost; once postgate is back, it works again.
func scenarioPostgateDown(s *sc) {
	e := s.e
	if err := e.stopPostgate(); err != nil {
		s.check(false, "stopping postgate: %v\n%s", err, tail(e.postgateLog(), 10))
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := e.startPostgate(); err != nil {
				s.Errorf("restart postgate: %v", err)
			}
		}
	}()

	// A brand-new triplet: with postgate up it would be greylisted.
	o := e.mxFrom("192.0.2.70", "down@remote.example", "bob@example.org")
	o.token = token("down-mx")
	r := s.send(o)
	if !r.accepted {
		s.fail("postgate down: want accepted (default_action=DUNNO), got %v", r)
	}
	m := s.delivered(o.token)
	s.check(m.header().Get("X-Greylist") == "", "postgate down: message has an X-Greylist header")
	s.check(strings.Contains(readTail(e.pfLog, 200), "problem talking to server 127.0.0.1:"+strconv.Itoa(e.policyPort)),
		"postfix log does not mention the unreachable policy service 127.0.0.1:%d", e.policyPort)

	// Local submission (sendmail, non_smtpd_milters) is not lost either.
	tok := token("down-local")
	if err := e.sendmail(authUser, "bob@example.org", simpleMessage(authUser, "bob@example.org", tok)); err != nil {
		s.fail("%v", err)
	}
	s.delivered(tok)

	milter := e.hasSection("milter") && e.hasSection("dkim") && e.keylistFile != ""
	if milter {
		tok := token("down-sub")
		r := s.send(sendOpts{port: e.subPort, auth: true, from: authUser, to: "friend@remote.example", token: tok})
		if !r.accepted {
			s.fail("postgate down: submission not accepted (milter_default_action=accept): %v", r)
		}
		m := s.delivered(tok)
		s.check(m.header().Get("DKIM-Signature") == "", "postgate down: submitted mail is signed?")
	}

	if err := e.startPostgate(); err != nil {
		s.fail("restart postgate: %v", err)
	}
	restarted = true

	// Works again: a new triplet is greylisted, the triplet that passed in
	// the greylisting scenario (state in the database) is accepted.
	o = e.mxFrom("192.0.2.71", "back@remote.example", "bob@example.org")
	o.token = token("up-new")
	r = s.send(o)
	s.check(isGreylisted(r), "postgate restarted: new triplet want 4.2.0 greylisting, got %v", r)
	o = e.mxFrom("192.0.2.10", "alice@grey.e2e.example", "bob@example.org")
	o.token = token("up-known")
	r = s.send(o)
	s.check(r.accepted, "postgate restarted: the triplet that passed before the restart: want accepted, got %v", r)
	if milter {
		tok := token("up-sub")
		r := s.send(sendOpts{port: e.subPort, auth: true, from: authUser, to: "friend@remote.example", token: tok,
			data: simpleMessage(authUser, "friend@remote.example", tok)})
		if !r.accepted {
			s.fail("postgate restarted: submission not accepted: %v", r)
		}
		m := s.delivered(tok)
		s.check(strings.Contains(m.header().Get("DKIM-Signature"), "d="+ourDomain), "postgate restarted: submitted mail is not signed:\n%s", m.headerBlock())
	}
}

// scenarioReload whitelists a client, sends SIGHUP while mail is flowing,
// and checks the change took effect and no message was refused or lost.
func scenarioReload(s *sc) {
	e := s.e
	p := e.postgate()
	if p == nil {
		s.fail("postgate is not running")
	}
	const newClient = "203.0.113.77"
	o := e.mxFrom(newClient, "reload@remote.example", "bob@example.org")
	o.token = token("reload-before")
	r := s.send(o)
	s.check(isGreylisted(r), "before the reload: %s want greylisted, got %v", newClient, r)

	// Mail from the whitelisted client keeps flowing while we reload.
	const n = 8
	results := make(chan sendResult, n)
	toks := make([]string, n)
	mid := make(chan struct{})
	go func() {
		for i := range n {
			if i == 2 {
				close(mid)
			}
			oo := e.mxFrom(whitelistedClient, "flow@relay.e2e.example", "bob@example.org")
			oo.token = token(fmt.Sprintf("reload-flow%d", i))
			toks[i] = oo.token
			r, err := e.send(oo)
			if err != nil {
				r.reply = err.Error()
			}
			results <- r
		}
	}()
	<-mid
	f, err := os.OpenFile(e.whitelistFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		s.fail("%v", err)
	}
	fmt.Fprintf(f, "%s\n", newClient)
	f.Close()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		s.fail("SIGHUP: %v", err)
	}
	for i := range n {
		r := <-results
		s.check(r.accepted, "message %d sent around the reload: want accepted, got %v", i, r)
	}
	for i := range n {
		if _, err := e.sink.wait(toks[i], 20*time.Second); err != nil {
			s.check(false, "message %d sent around the reload was not delivered: %v", i, err)
		}
	}
	s.check(!p.exited(), "postgate exited after SIGHUP: %v\n%s", p.err, tail(e.postgateLog(), 10))

	// New triplets from the newly whitelisted client pass at once. The
	// reload is asynchronous: allow a few attempts, each a new triplet
	// (a new recipient), so passing the greylist delay cannot explain it.
	var accepted sendResult
	var tok string
	for attempt := range 6 {
		o := e.mxFrom(newClient, "reload@remote.example", fmt.Sprintf("rcpt%d@example.org", attempt))
		tok = token("reload-after")
		o.token = tok
		accepted = s.send(o)
		if accepted.accepted {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !accepted.accepted {
		s.fail("after whitelisting %s and SIGHUP: new triplets still refused: %v\n%s", newClient, accepted, tail(e.postgateLog(), 10))
	}
	m := s.delivered(tok)
	s.check(m.header().Get("X-Greylist") == "", "whitelisted client's message has X-Greylist: %q", m.header().Get("X-Greylist"))

	if e.hasSection("dkim") && e.hasSection("milter") && e.keylistFile != "" {
		s.reloadKeyList(p)
	}
}

// reloadKeyList adds a key for a second domain to the KeyList: after SIGHUP
// mail From: that domain is signed with it.
func (s *sc) reloadKeyList(p *proc) {
	s.Helper()
	e := s.e
	const domain, selector = "example.net", "e2enet"
	from := "user@" + domain
	submit := func(name string) *delivered {
		tok := token(name)
		r := s.send(sendOpts{port: e.subPort, auth: true, from: authUser, to: "friend@remote.example", token: tok,
			data: simpleMessage(from, "friend@remote.example", tok)})
		if !r.accepted {
			s.fail("%s: submission not accepted: %v", name, r)
		}
		return s.delivered(tok)
	}
	hasD := func(m *delivered) bool {
		return strings.Contains(strings.Join(m.header()["Dkim-Signature"], " "), "d="+domain)
	}
	m := submit("keylist-before")
	s.check(!hasD(m), "From: %s signed with d=%s before its key was in the KeyList", from, domain)
	if err := e.genkey(domain, selector); err != nil {
		s.fail("%v", err)
	}
	f, err := os.OpenFile(e.keylistFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		s.fail("%v", err)
	}
	fmt.Fprintf(f, "*@%s:%s:%s\n", domain, domain, filepath.Join(e.dkimKeyDir, selector))
	f.Close()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		s.fail("SIGHUP: %v", err)
	}
	for attempt := 0; ; attempt++ {
		m = submit("keylist-after")
		if hasD(m) || attempt == 5 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !hasD(m) {
		s.fail("KeyList changed and SIGHUP sent: From: %s still not signed with d=%s:\n%s", from, domain, m.headerBlock())
	}
	s.pythonVerify(m, selector, domain)
}

// simpleMessage is a minimal RFC 5322 message carrying tok.
func simpleMessage(from, to, tok string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: e2e %s\r\nDate: %s\r\nMessage-ID: <%s@e2e.example>\r\nX-E2E-Token: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello from the postgate e2e test.\r\nToken %s.\r\n",
		from, to, tok, time.Now().Format(time.RFC1123Z), tok, tok, tok)
}
