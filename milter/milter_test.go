package milter

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"postgate/dkim"
)

// goldenOutbound is a message from one of our users. The folded Subject and
// the trailing whitespace in the body exercise canonicalization.
const goldenOutbound = "From: Alice <alice@example.com>\n" +
	"To: Bob <bob@example.net>\n" +
	"Subject: a folded\n\tsubject line\n" +
	"Date: Sat, 21 Nov 2026 06:00:00 +0000\n" +
	"Message-ID: <golden-1@example.com>\n" +
	"MIME-Version: 1.0\n" +
	"Content-Type: text/plain; charset=utf-8\n" +
	"\n" +
	"Hello Bob,  \n" +
	"\n" +
	"this line has trailing spaces   \n" +
	"and this one a tab\t\n" +
	"\n\n"

func checkSigned(t *testing.T, e *env, msg string, mods []gomilter.ModifyAction, act *gomilter.Action) {
	t.Helper()
	if act.Code != gomilter.ActAccept {
		t.Fatalf("action %q, want accept", act.Code)
	}
	sigs := inserted(mods, "DKIM-Signature")
	if len(sigs) != 2 || len(mods) != 2 {
		t.Fatalf("modifications %+v, want two DKIM-Signature inserts", mods)
	}
	for i, m := range sigs {
		if m.HeaderIndex != 0 {
			t.Errorf("signature %d inserted at %d, want 0 (top)", i, m.HeaderIndex)
		}
		if strings.HasPrefix(m.HeaderValue, " ") || strings.Contains(m.HeaderValue, "\r") {
			t.Errorf("signature %d value %q: want no leading space (MTA adds it) and LF folding", i, m.HeaderValue)
		}
	}
	// Inserted last-first at the top: the RSA key (first rule) ends on top.
	if !strings.Contains(sigs[1].HeaderValue, "a=rsa-sha256") || !strings.Contains(sigs[0].HeaderValue, "a=ed25519-sha256") {
		t.Errorf("insert order: want ed25519 first then rsa (rsa on top), got %q / %q", sigs[0].HeaderValue, sigs[1].HeaderValue)
	}
	out := apply(t, msg, mods, false)
	res := e.verifyGo(out)
	if len(res) != 2 {
		t.Fatalf("dkim package: %d results, want 2", len(res))
	}
	for _, r := range res {
		if r.Status != dkim.StatusPass || r.Domain != testDomain {
			t.Errorf("dkim package: %+v, want pass for %s", r, testDomain)
		}
	}
	if got := e.verifyPython(out); strings.Join(got, " ") != "pass pass" {
		t.Errorf("dkimpy: %v, want pass pass\n%s", got, out)
	}
}

func TestSignAuthenticatedSubmission(t *testing.T) {
	e := newEnv(t, nil)
	s := e.session()
	connect(t, s, external) // any client address: SMTP AUTH is what counts
	mods, act := transaction(t, s, goldenOutbound, 7, "i", "4ABC123", "{auth_type}", "PLAIN", "{auth_authen}", "alice")
	checkSigned(t, e, goldenOutbound, mods, act)
	if log := e.logText(); !strings.Contains(log, "mode=sign") || !strings.Contains(log, "origin=auth") || !strings.Contains(log, "queue_id=4ABC123") {
		t.Errorf("log line lacks mode/origin/queue id:\n%s", log)
	}
}

func TestSignSimpleCanonicalization(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SignOptions = &dkim.SignOptions{Canonicalization: "simple/simple"} })
	s := e.session()
	connect(t, s, submission)
	mods, act := transaction(t, s, goldenOutbound, 1<<16, "i", "4ABC123")
	// simple/simple breaks on any byte changed in the header: this checks
	// the leading space put back and the LF folding turned into CRLF.
	checkSigned(t, e, goldenOutbound, mods, act)
}

// The {daemon_name} macro comes only with the connect event; go-milter
// replaces its macro map at every later macro packet, and makes a new
// backend after each final reply: the second and third messages of the
// connection must still be signed.
func TestDaemonNameOnlyAtConnect(t *testing.T) {
	e := newEnv(t, nil)
	s := e.session()
	connect(t, s, submission)
	for i := range 3 {
		mods, act := transaction(t, s, goldenOutbound, 100, "i", "4ABC12"+string(rune('0'+i)))
		checkSigned(t, e, goldenOutbound, mods, act)
	}
	if n := strings.Count(e.logText(), "origin=daemon"); n != 3 {
		t.Errorf("%d messages logged with origin=daemon, want 3:\n%s", n, e.logText())
	}
}

// Mail submitted with sendmail(1) reaches non_smtpd_milters as a connection
// from localhost, 127.0.0.1, port 0: signed even with no internal networks.
func TestSignLocalSubmission(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.InternalNetworks = []netip.Prefix{} })
	s := e.session()
	connect(t, s, pickup)
	mods, act := transaction(t, s, goldenOutbound, 4096, "i", "4ABC123")
	checkSigned(t, e, goldenOutbound, mods, act)
	if !strings.Contains(e.logText(), "origin=local") {
		t.Errorf("log: want origin=local:\n%s", e.logText())
	}
}

func TestSignInternalNetwork(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.InternalNetworks = []netip.Prefix{mustPrefix("192.0.2.0/24")} })
	s := e.session()
	connect(t, s, external) // 192.0.2.10
	mods, act := transaction(t, s, goldenOutbound, 4096)
	checkSigned(t, e, goldenOutbound, mods, act)
}

// The signing-oracle test: an outside client, no AUTH, a non-originating
// service, From: our domain. Signing it would let anyone get mail signed
// for example.com; it must be verified instead (dkim=none: unsigned).
func TestSigningOracle(t *testing.T) {
	e := newEnv(t, nil)
	s := e.session()
	connect(t, s, external)
	mods, act := transaction(t, s, goldenOutbound, 4096, "i", "4ABC123", "{auth_authen}", "")
	if act.Code != gomilter.ActAccept {
		t.Fatalf("action %q, want accept", act.Code)
	}
	if sigs := inserted(mods, "DKIM-Signature"); len(sigs) != 0 {
		t.Fatalf("external client got a signature: %+v", sigs)
	}
	ar := inserted(mods, "Authentication-Results")
	if len(ar) != 1 || len(mods) != 1 || ar[0].HeaderIndex != 0 || ar[0].HeaderValue != testAuthservID+"; dkim=none" {
		t.Fatalf("modifications %+v, want one Authentication-Results %q at 0", mods, testAuthservID+"; dkim=none")
	}
	if !strings.Contains(e.logText(), "mode=verify") {
		t.Errorf("log: want mode=verify:\n%s", e.logText())
	}
}

// An originating message whose author has no key is verified (as OpenDKIM).
func TestOriginatingWithoutKeyVerified(t *testing.T) {
	e := newEnv(t, nil)
	s := e.session()
	connect(t, s, submission)
	msg := strings.Replace(goldenOutbound, "alice@example.com", "alice@elsewhere.example", 1)
	mods, _ := transaction(t, s, msg, 4096)
	if len(inserted(mods, "DKIM-Signature")) != 0 || len(inserted(mods, "Authentication-Results")) != 1 {
		t.Fatalf("modifications %+v, want only an Authentication-Results", mods)
	}
}

func TestVerifyPass(t *testing.T) {
	e := newEnv(t, nil)
	other := &dkim.Key{Domain: "other.example", Selector: "s1", Signer: testRSA(t)}
	msg := signMessage(t, strings.ReplaceAll(goldenOutbound, "example.com", "other.example"), nil, other)
	s := e.session()
	connect(t, s, external)
	mods, act := transaction(t, s, msg, 10, "i", "4ABC123")
	if act.Code != gomilter.ActAccept {
		t.Fatalf("action %q", act.Code)
	}
	ar := inserted(mods, "Authentication-Results")
	if len(ar) != 1 || ar[0].HeaderIndex != 0 {
		t.Fatalf("modifications %+v", mods)
	}
	want := testAuthservID + "; dkim=pass header.d=other.example header.s=s1 header.a=rsa-sha256 header.b="
	if got := strings.ReplaceAll(ar[0].HeaderValue, "\n\t", " "); !strings.HasPrefix(got, want) {
		t.Errorf("Authentication-Results %q, want prefix %q", ar[0].HeaderValue, want)
	}
}

// Forged Authentication-Results with our authserv-id go, whatever their
// case and comments; foreign ones stay. Indices are 1-based among the
// Authentication-Results fields, highest first.
func TestForgedAuthResultsRemoved(t *testing.T) {
	e := newEnv(t, nil)
	msg := "Authentication-Results: other.example; dkim=pass header.d=example.com\n" + // 1 foreign
		"Authentication-Results: mx.example.org; dkim=pass header.d=example.com\n" + // 2 ours
		"Received: from a by b\n" +
		"authentication-results: MX.Example.ORG;\n\tdkim=pass header.d=bank.example\n" + // 3 ours
		"Authentication-Results: (forged) mx.example.org (really); spf=pass\n" + // 4 ours
		"Authentication-Results: mx.example.org.evil.example; dkim=pass\n" + // 5 foreign
		"AUTHENTICATION-RESULTS:   mx.example.org 1; dkim=pass\n" + // 6 ours (version)
		goldenOutbound
	s := e.session()
	connect(t, s, external)
	mods, _ := transaction(t, s, msg, 4096)
	var deleted []uint32
	for _, m := range mods {
		if m.Code == gomilter.ActChangeHeader {
			if m.HeaderValue != "" || !strings.EqualFold(m.HeaderName, "Authentication-Results") {
				t.Errorf("unexpected change %+v", m)
			}
			deleted = append(deleted, m.HeaderIndex)
		}
	}
	if want := []uint32{6, 4, 3, 2}; !equal(deleted, want) {
		t.Errorf("deleted indices %v, want %v", deleted, want)
	}
	// The edited message keeps the foreign ones and gets ours on top.
	out := apply(t, msg, mods, false)
	var ars []string
	for _, line := range strings.Split(out, "\r\n") {
		if strings.HasPrefix(strings.ToLower(line), "authentication-results:") {
			ars = append(ars, line)
		}
	}
	want := []string{
		"Authentication-Results: mx.example.org; dkim=none",
		"Authentication-Results: other.example; dkim=pass header.d=example.com",
		"Authentication-Results: mx.example.org.evil.example; dkim=pass",
	}
	if strings.Join(ars, "|") != strings.Join(want, "|") {
		t.Errorf("Authentication-Results after editing:\n%s\nwant:\n%s", strings.Join(ars, "\n"), strings.Join(want, "\n"))
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestVerdicts(t *testing.T) {
	other := &dkim.Key{Domain: "other.example", Selector: "s1", Signer: testRSA(t)}
	signed := signMessage(t, strings.ReplaceAll(goldenOutbound, "example.com", "other.example"), nil, other)
	tampered := strings.Replace(signed, "Hello Bob", "Hello Eve", 1)
	missing := strings.ReplaceAll(signed, "s=s1;", "s=nokey;")

	verdicts := map[dkim.Status]Action{
		dkim.StatusFail:      Reject,
		dkim.StatusTempError: TempFail,
	}
	tests := []struct {
		name     string
		msg      string
		servfail bool
		verdicts map[dkim.Status]Action
		code     gomilter.ActionCode
		smtp     int
		result   string
	}{
		{"pass", signed, false, verdicts, gomilter.ActAccept, 0, "dkim=pass"},
		{"fail rejected", tampered, false, verdicts, gomilter.ActReplyCode, 550, "dkim=fail"},
		{"fail accepted by default", tampered, false, nil, gomilter.ActAccept, 0, "dkim=fail"},
		{"dns failure tempfails", signed, true, verdicts, gomilter.ActReplyCode, 451, "dkim=temperror"},
		{"no key is permerror, accepted", missing, false, verdicts, gomilter.ActAccept, 0, "dkim=permerror"},
		{"unsigned rejected on request", goldenOutbound, false, map[dkim.Status]Action{dkim.StatusNone: Reject}, gomilter.ActReplyCode, 550, "dkim=none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Verdicts = tt.verdicts })
			if tt.servfail {
				e.dns.Fail("s1._domainkey.other.example", 2) // SERVFAIL
			}
			s := e.session()
			connect(t, s, external)
			mods, act := transaction(t, s, tt.msg, 4096)
			if act.Code != tt.code || act.SMTPCode != tt.smtp {
				t.Errorf("action %q %d %q, want %q %d", act.Code, act.SMTPCode, act.SMTPText, tt.code, tt.smtp)
			}
			ar := inserted(mods, "Authentication-Results")
			if len(ar) != 1 || !strings.Contains(ar[0].HeaderValue, tt.result) {
				t.Errorf("Authentication-Results %+v, want %s", ar, tt.result)
			}
		})
	}
}

// A reload swaps the keys for the next message.
func TestSetOptionsSwapsKeys(t *testing.T) {
	e := newEnv(t, nil)
	s := e.session()
	connect(t, s, submission)
	mods, act := transaction(t, s, goldenOutbound, 4096)
	checkSigned(t, e, goldenOutbound, mods, act)

	if err := e.srv.SetOptions(Options{
		Keyring:       dkim.NewKeyring([]dkim.Rule{{Pattern: "*@example.com", Key: e.ed}}),
		VerifyOptions: e.verify,
		AuthservID:    testAuthservID,
		Logger:        e.srv.cfg.Load().log,
	}); err != nil {
		t.Fatal(err)
	}
	mods, _ = transaction(t, s, goldenOutbound, 4096)
	sigs := inserted(mods, "DKIM-Signature")
	if len(sigs) != 1 || !strings.Contains(sigs[0].HeaderValue, "s=ed1") {
		t.Fatalf("after reload: %+v, want one Ed25519 signature", sigs)
	}
	if err := e.srv.SetOptions(Options{AuthservID: "bad id;"}); err == nil {
		t.Error("SetOptions accepted an invalid authserv-id")
	}
}

// Shutdown lets a message in progress finish, closes idle connections and
// returns once all are gone.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, nil)
	idle := e.session()
	connect(t, idle, external)
	busy := e.session()
	connect(t, busy, submission)
	if act, err := busy.Mail("alice@example.com", nil); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("Mail: %v %v", act, err)
	}
	fields, body := splitMessage(t, goldenOutbound)
	for _, f := range fields {
		if _, err := busy.HeaderField(f.name, strings.TrimPrefix(f.value, " ")); err != nil {
			t.Fatal(err)
		}
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	for i := 0; !e.srv.draining.Load(); i++ {
		if i == 1000 {
			t.Fatal("Shutdown did not start")
		}
		time.Sleep(time.Millisecond)
	}
	// The idle connection is closed: its next read fails.
	if _, err := idle.Mail("x@example.net", nil); err == nil {
		t.Error("idle connection still answers after Shutdown")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a message in progress", err)
	default:
	}
	// The busy one finishes its message, signed.
	if _, err := busy.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.BodyChunk([]byte(strings.ReplaceAll(body, "\n", "\r\n"))); err != nil {
		t.Fatal(err)
	}
	mods, act, err := busy.End()
	if err != nil {
		t.Fatalf("End during drain: %v", err)
	}
	checkSigned(t, e, goldenOutbound, mods, act)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last message")
	}
}

func TestNegotiate(t *testing.T) {
	postfix := optNeg{version: 6, actions: 0x1ff, protocol: 0x1fffff}
	got := negotiate(postfix)
	if got.version != 2 {
		t.Errorf("version %d", got.version)
	}
	if got.actions != gomilter.OptAddHeader|gomilter.OptChangeHeader|gomilter.OptSetSymList {
		t.Errorf("actions %#x", got.actions)
	}
	want := wantSkip | wantNoReply | wantLeadSpace
	if got.protocol != want {
		t.Errorf("protocol %#x, want %#x", got.protocol, want)
	}
	// An MTA offering nothing (go-milter's client) gets nothing optional.
	if got := negotiate(optNeg{version: 6}); got.protocol != 0 || got.actions != needActions {
		t.Errorf("empty offer: %+v", got)
	}
}

func TestVerdictFunction(t *testing.T) {
	v := map[dkim.Status]Action{dkim.StatusFail: Reject, dkim.StatusTempError: TempFail}
	r := func(ss ...dkim.Status) []dkim.Result {
		var out []dkim.Result
		for _, s := range ss {
			out = append(out, dkim.Result{Status: s})
		}
		return out
	}
	tests := []struct {
		in     []dkim.Result
		status dkim.Status
		action Action
	}{
		{nil, dkim.StatusNone, Accept},
		{r(dkim.StatusFail), dkim.StatusFail, Reject},
		{r(dkim.StatusFail, dkim.StatusPass), dkim.StatusPass, Accept},
		{r(dkim.StatusFail, dkim.StatusTempError), dkim.StatusTempError, TempFail},
		{r(dkim.StatusFail, dkim.StatusPermError), dkim.StatusFail, Accept}, // permerror accepted
	}
	for _, tt := range tests {
		st, a := verdict(tt.in, v)
		if st != tt.status || a != tt.action {
			t.Errorf("verdict(%v) = %s %s, want %s %s", tt.in, st, a, tt.status, tt.action)
		}
	}
}

func TestParseAction(t *testing.T) {
	for in, want := range map[string]Action{"accept": Accept, " Reject": Reject, "TEMPFAIL": TempFail} {
		if got, err := ParseAction(in); err != nil || got != want {
			t.Errorf("ParseAction(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseAction("discard"); err == nil {
		t.Error("ParseAction(discard) succeeded")
	}
}

func FuzzParseOptNeg(f *testing.F) {
	f.Add([]byte("O\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"))
	f.Add([]byte("O\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("O\x00\x00\x00\x01"))
	f.Add([]byte("C"))
	f.Fuzz(func(t *testing.T, p []byte) {
		o, err := parseOptNeg(p)
		if err != nil {
			return
		}
		if o.version < 2 || len(p) < 13 {
			t.Fatalf("accepted %q as %+v", p, o)
		}
		n := negotiate(o)
		if n.protocol&^o.protocol != 0 {
			t.Fatalf("asked for protocol bits %#x not offered in %#x", n.protocol, o.protocol)
		}
	})
}

func FuzzOwnAuthResults(f *testing.F) {
	f.Add("mx.example.org; dkim=pass", "Authentication-Results")
	f.Add("(c) MX.EXAMPLE.ORG 1; none", "authentication-results")
	f.Add("other.example; dkim=pass", "Authentication-Results")
	f.Add("", "Subject")
	f.Fuzz(func(t *testing.T, value, name string) {
		fields := []dkim.Field{
			{Name: "Authentication-Results", Value: " mx.example.org; dkim=none"},
			{Name: name, Value: value},
			{Name: "Authentication-Results", Value: " other.example; dkim=none"},
		}
		idx := ownAuthResults(fields, testAuthservID)
		if len(idx) == 0 || idx[len(idx)-1] != 1 {
			t.Fatalf("first field (ours) not deleted: %v", idx)
		}
		for i := 1; i < len(idx); i++ {
			if idx[i] >= idx[i-1] {
				t.Fatalf("indices not strictly decreasing: %v", idx)
			}
		}
		if len(idx) > 2 {
			t.Fatalf("more deletions than own fields: %v", idx)
		}
	})
}
