package spf

import (
	"net/netip"
	"strings"
	"testing"
)

func result(identity, res string) Result {
	r := Result{Result: res, Identity: identity, ClientIP: netip.MustParseAddr("192.0.2.1"),
		Helo: "mail.example.net", Sender: "alice@example.com", Domain: "example.com"}
	if identity == IdentityHelo {
		r.Domain = "mail.example.net"
	}
	return r
}

func TestReceivedSPF(t *testing.T) {
	r := result(IdentityMailFrom, Pass)
	r.Mechanism = "ip"
	got := r.ReceivedSPF("mx.example.org")
	want := "pass (mx.example.org: domain of alice@example.com designates 192.0.2.1 as permitted sender)" +
		" client-ip=192.0.2.1; envelope-from=alice@example.com; helo=mail.example.net; mechanism=ip;" +
		" receiver=mx.example.org; identity=mailfrom;"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Hidden receiver, IPv6, a problem, and values needing quotes.
	r = Result{Result: PermError, Identity: IdentityMailFrom, ClientIP: netip.MustParseAddr("2001:db8::1"),
		Helo: "[2001:db8::1]", Sender: `"odd \"local\""@example.com`, Problem: "invalid record (x\r\n)"}
	got = r.ReceivedSPF("")
	for _, part := range []string{
		`permerror (permanent error in the SPF record of "odd \\"local\\""@example.com: invalid record \(x??\))`,
		` client-ip="2001:db8::1";`,
		` envelope-from="\"odd \\\"local\\\"\"@example.com";`,
		` helo="[2001:db8::1]";`,
		` problem="invalid record (x??)";`,
		` identity=mailfrom;`,
	} {
		if !strings.Contains(got, part) {
			t.Errorf("%s\nlacks %s", got, part)
		}
	}
	if strings.Contains(got, "receiver") || strings.ContainsAny(got, "\r\n") {
		t.Errorf("hidden receiver or line break: %s", got)
	}
	// Null sender.
	r = result(IdentityMailFrom, None)
	r.Sender = ""
	if got := r.ReceivedSPF(""); !strings.Contains(got, `envelope-from="";`) || !strings.Contains(got, "postmaster@mail.example.net") {
		t.Errorf("null sender: %s", got)
	}
}

func TestAuthResults(t *testing.T) {
	for _, tc := range []struct {
		r    Result
		want string
	}{
		{result(IdentityMailFrom, Pass), "spf=pass smtp.mailfrom=alice@example.com"},
		{result(IdentityHelo, Pass), "spf=pass smtp.helo=mail.example.net"},
		{Result{Result: None, Identity: IdentityMailFrom, Helo: "h.example"}, "spf=none smtp.mailfrom=postmaster@h.example"},
		{Result{Result: TempError, Identity: IdentityMailFrom, Sender: "a@b.example", Problem: "timeout"}, "spf=temperror (timeout) smtp.mailfrom=a@b.example"},
	} {
		if got := tc.r.AuthResults(); got != tc.want {
			t.Errorf("AuthResults = %q, want %q", got, tc.want)
		}
	}
}

func TestDecideDefaults(t *testing.T) {
	p := DefaultPolicy()
	p.ReceiverName = "mx.example.org"
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	fail := result(IdentityMailFrom, Fail)
	o := p.Decide(Result{}, fail)
	if o.Action != Reject || o.Reply != "550 5.7.23 SPF validation failed: 192.0.2.1 is not allowed to send mail for example.com" {
		t.Errorf("fail: %+v", o)
	}
	fail.Explanation = "See http://example.com/why\r\nnow"
	if o := p.Decide(Result{}, fail); o.Reply != "550 5.7.23 See http://example.com/why??now" {
		t.Errorf("fail with explanation: %q", o.Reply)
	}
	for _, res := range []string{Pass, SoftFail, Neutral, None, PermError, TempError} {
		o := p.Decide(result(IdentityHelo, Fail), result(IdentityMailFrom, res))
		if o.Action != Accept || !strings.HasPrefix(o.Header, "Received-SPF: "+res+" (mx.example.org: ") ||
			!strings.Contains(o.Header, "identity=mailfrom;") {
			t.Errorf("%s (HELO fail): %+v", res, o)
		}
	}
	if p.NeedHelo() {
		t.Error("default policy needs the HELO result")
	}
}

func TestDecideOptions(t *testing.T) {
	p := DefaultPolicy()
	p.Helo.Fail = Reject // helo_reject = true
	p.MailFrom.PermError = Reject
	p.MailFrom.TempError = Defer
	p.MailFrom.SoftFail = Defer
	if !p.NeedHelo() {
		t.Error("HELO reject does not need the HELO result")
	}
	perm := result(IdentityMailFrom, PermError)
	perm.Problem = "lookup limit reached"
	temp := result(IdentityMailFrom, TempError)
	temp.Problem = "timeout"
	for _, tc := range []struct {
		helo, mailfrom Result
		action         Action
		reply          string
	}{
		{result(IdentityHelo, Fail), result(IdentityMailFrom, Pass), Reject, "550 5.7.23 SPF validation failed: 192.0.2.1 is not allowed to send mail for mail.example.net"},
		{Result{}, perm, Reject, "550 5.7.24 SPF permanent error: lookup limit reached"},
		{Result{}, temp, Defer, "451 4.4.3 SPF temporary error: timeout"},
		{Result{}, result(IdentityMailFrom, SoftFail), Defer, "451 4.7.23 SPF softfail: domain of transitioning alice@example.com does not designate 192.0.2.1 as permitted sender"},
	} {
		o := p.Decide(tc.helo, tc.mailfrom)
		if o.Action != tc.action || o.Reply != tc.reply || o.Header != "" {
			t.Errorf("%s/%s: %+v, want %s %q", tc.helo.Result, tc.mailfrom.Result, o, tc.action, tc.reply)
		}
	}
	p.Header = HeaderAuthResults
	p.ReceiverName = "mx.example.org"
	if o := p.Decide(Result{}, result(IdentityMailFrom, Neutral)); o.Header != "Authentication-Results: mx.example.org; spf=neutral smtp.mailfrom=alice@example.com" {
		t.Errorf("A-R header: %q", o.Header)
	}
	p.Header = HeaderNone
	if o := p.Decide(Result{}, result(IdentityMailFrom, Neutral)); o.Header != "" {
		t.Errorf("no header: %q", o.Header)
	}
	p.Header = "x-spf"
	p.MailFrom.Pass = "maybe"
	if p.Validate() == nil {
		t.Error("bad header kind and action accepted")
	}
}

// CVE-2019-20790: a HELO pass must never come out as the MAIL FROM result.
func TestDecideHeloNeverStandsInForMailFrom(t *testing.T) {
	p := DefaultPolicy()
	for _, mf := range []string{None, Neutral, SoftFail, PermError, TempError} {
		o := p.Decide(result(IdentityHelo, Pass), result(IdentityMailFrom, mf))
		if !strings.HasPrefix(o.Header, "Received-SPF: "+mf+" ") || strings.Contains(o.Header, "identity=helo") {
			t.Errorf("MAIL FROM %s with HELO pass: %q", mf, o.Header)
		}
		if o.GreylistWaive || o.Origin != "" {
			t.Errorf("MAIL FROM %s with HELO pass waives greylisting: %+v", mf, o)
		}
	}
	p.Header = HeaderAuthResults
	if o := p.Decide(result(IdentityHelo, Pass), Result{}); o.Header != "Authentication-Results: localhost; spf=pass smtp.helo=mail.example.net" {
		t.Errorf("HELO only: %q", o.Header)
	}
}

func TestDecideWhitelistAndGreylist(t *testing.T) {
	p := DefaultPolicy()
	p.Helo.Fail = Reject
	p.WhitelistDomains = []string{"example.com"}
	p.GreylistWaivePassDomains = []string{".example.org"}
	p.GreylistRequire = []string{SoftFail, None}

	// Whitelisted only when the domain's SPF passes.
	o := p.Decide(result(IdentityHelo, Fail), result(IdentityMailFrom, Pass))
	if o.Action != Accept || !o.Whitelisted || !o.GreylistWaive || o.Origin != "example.com" {
		t.Errorf("whitelisted pass: %+v", o)
	}
	for _, res := range []string{SoftFail, Neutral, None} {
		o := p.Decide(Result{}, result(IdentityMailFrom, res))
		if o.Whitelisted || o.GreylistWaive || o.Origin != "" {
			t.Errorf("whitelisted domain with %s: %+v", res, o)
		}
		if o.GreylistRequire != (res != Neutral) {
			t.Errorf("%s: GreylistRequire %v", res, o.GreylistRequire)
		}
	}
	// Pool-aware greylisting: the validated domain is the origin.
	pass := result(IdentityMailFrom, Pass)
	pass.Domain, pass.Sender = "Lists.Example.ORG.", "bob@Lists.Example.ORG."
	if o := p.Decide(Result{}, pass); !o.GreylistWaive || o.Whitelisted || o.Origin != "lists.example.org" {
		t.Errorf("waived domain: %+v", o)
	}
	pass.Domain = "example.net"
	if o := p.Decide(Result{}, pass); o.GreylistWaive || o.Origin != "example.net" {
		t.Errorf("plain pass: %+v", o)
	}
	p.GreylistWaivePass = true
	if o := p.Decide(Result{}, pass); !o.GreylistWaive {
		t.Errorf("waive on any pass: %+v", o)
	}
	p.GreylistPassOrigin = false
	if o := p.Decide(Result{}, pass); o.Origin != "" {
		t.Errorf("origin without pool-aware greylisting: %+v", o)
	}
}

func TestSkip(t *testing.T) {
	p := DefaultPolicy()
	p.SkipClients = append(p.SkipClients, netip.MustParsePrefix("198.51.100.0/24"))
	p.SkipHelos = []string{"trusted.example", ".internal.example"}
	for _, tc := range []struct {
		ip, helo string
		skip     bool
	}{
		{"127.0.0.1", "x", true},
		{"::1", "x", true},
		{"::ffff:198.51.100.9", "x", true},
		{"192.0.2.1", "TRUSTED.example.", true},
		{"192.0.2.1", "a.internal.example", true},
		{"192.0.2.1", "internal.example", false},
		{"192.0.2.1", "nottrusted.example", false},
	} {
		if got, _ := p.Skip(netip.MustParseAddr(tc.ip), tc.helo); got != tc.skip {
			t.Errorf("Skip(%s, %s) = %v", tc.ip, tc.helo, got)
		}
	}
}
