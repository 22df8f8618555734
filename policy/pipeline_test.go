package policy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func greylistCheck(d *Decision) error {
	if d.GreylistingWaived() {
		return nil
	}
	d.DeferIfPermit("Greylisted, see http://postgrey.schweikert.ch/help/example.net.html", "new")
	return nil
}

func TestPipelinePrecedence(t *testing.T) {
	log, logs := testLogger()
	m := NewMetrics(nil)
	var ranAfterReject bool
	p := NewPipeline(PipelineOptions{Logger: log, Metrics: m},
		checkFunc{"greylist", func(_ context.Context, _ *Request, d *Decision) error { return greylistCheck(d) }},
		checkFunc{"spf", func(_ context.Context, _ *Request, d *Decision) error {
			d.AddHeader("Received-SPF", "Pass (mailfrom) identity=mailfrom")
			return nil
		}},
		checkFunc{"rbl", func(_ context.Context, req *Request, d *Decision) error {
			d.Reject("554 5.7.1 Service unavailable; Client host ["+req.ClientAddress+"] blocked using zen.spamhaus.org", "zen")
			return nil
		}},
		checkFunc{"late", func(context.Context, *Request, *Decision) error { ranAfterReject = true; return nil }},
	)
	res := p.Decide(context.Background(), mustParse(t, postfixRCPT))
	if want := "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org"; res.Action != want {
		t.Errorf("Action = %q, want %q", res.Action, want)
	}
	if res.Reason != "rbl:zen" {
		t.Errorf("Reason = %q", res.Reason)
	}
	if ranAfterReject {
		t.Error("a check ran after a reject")
	}
	if len(res.Checks) != 3 {
		t.Errorf("ran %d checks, want 3", len(res.Checks))
	}
	if got := counterValue(t, m.requests.WithLabelValues("REJECT", "rbl")); got != 1 {
		t.Errorf("requests_total{REJECT,rbl} = %v", got)
	}
	if n := len(logs.lines("msg=decision")); n != 1 {
		t.Errorf("%d decision log lines, want 1:\n%s", n, logs)
	}
}

func TestPipelineDeferIfPermitAndLog(t *testing.T) {
	log, logs := testLogger()
	p := NewPipeline(PipelineOptions{Logger: log},
		checkFunc{"greylist", func(_ context.Context, _ *Request, d *Decision) error { return greylistCheck(d) }})
	res := p.Decide(context.Background(), mustParse(t, postfixRCPT))
	if want := "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.net.html"; res.Action != want {
		t.Fatalf("Action = %q", res.Action)
	}
	lines := logs.lines("msg=decision")
	if len(lines) != 1 {
		t.Fatalf("decision lines: %q", lines)
	}
	for _, want := range []string{
		"level=INFO msg=decision queue_id=\"\" client=mail.example.org[192.0.2.10] helo=Mail.Example.ORG",
		"sender=<Alice.Smith+tag@Example.org> recipient=<Bob@example.net> instance=1a2b.6655f0a1.8c3d2.0 state=RCPT",
		`action="DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.net.html" reason=greylist:new duration=`,
		"checks=greylist:",
	} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line %q lacks %q", lines[0], want)
		}
	}
}

func TestPipelineNotesFlowBetweenChecks(t *testing.T) {
	var sawNote, sawOrigin string
	p := NewPipeline(PipelineOptions{Logger: discardLogger()},
		checkFunc{"spf", func(_ context.Context, _ *Request, d *Decision) error {
			d.Annotate("spf.mailfrom", "pass")
			d.Origin = "example.org"
			d.WaiveGreylisting("pass")
			return nil
		}},
		checkFunc{"greylist", func(_ context.Context, _ *Request, d *Decision) error {
			sawNote, _ = d.Annotation("spf.mailfrom")
			sawOrigin = d.Origin
			return greylistCheck(d)
		}})
	res := p.Decide(context.Background(), mustParse(t, postfixRCPT))
	if res.Action != "DUNNO" || res.Reason != ReasonPass {
		t.Errorf("waived greylisting: %q %q", res.Action, res.Reason)
	}
	if sawNote != "pass" || sawOrigin != "example.org" {
		t.Errorf("greylist saw note %q origin %q", sawNote, sawOrigin)
	}
	if res.Decision.WaiveReason() != "spf:pass" || res.Decision.GreylistingRequired() {
		t.Errorf("waive reason %q", res.Decision.WaiveReason())
	}
}

func TestPipelineSkips(t *testing.T) {
	count := &countingCheck{}
	log, logs := testLogger()
	p := NewPipeline(PipelineOptions{
		Logger:          log,
		TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")},
	}, count)
	tests := []struct {
		set    map[string]string
		reason string
	}{
		{map[string]string{"client_address": "10.1.2.3"}, ReasonTrusted},
		{map[string]string{"client_address": "::ffff:10.1.2.3"}, ReasonTrusted},
		{map[string]string{"client_address": "2001:db8:1::25"}, ReasonTrusted},
		{map[string]string{"sasl_username": "alice", "sasl_method": "PLAIN"}, ReasonSASL},
		{map[string]string{"protocol_state": "MAIL"}, ReasonState},
		{map[string]string{"protocol_state": "END-OF-MESSAGE"}, ReasonState},
		{map[string]string{"protocol_state": "rcpt"}, ReasonState}, // values as sent: not RCPT
		{map[string]string{"request": "junk"}, ReasonUnknownRequest},
	}
	for _, tt := range tests {
		res := p.Decide(context.Background(), mustParse(t, request(tt.set)))
		if res.Action != "DUNNO" || res.Reason != tt.reason {
			t.Errorf("%v: %q %q, want DUNNO %q", tt.set, res.Action, res.Reason, tt.reason)
		}
	}
	if count.calls() != 0 {
		t.Errorf("checks ran %d times", count.calls())
	}
	if l := logs.lines("level=WARN", "msg=decision", "reason=unknown_request", "request=junk"); len(l) != 1 {
		t.Errorf("unknown request log: %q", logs.String())
	}
	p.Decide(context.Background(), mustParse(t, request(map[string]string{"client_address": "10.0.0.1x"})))
	if count.calls() != 1 {
		t.Errorf("an unparsable address must not count as trusted")
	}
}

func TestPipelineCheckFailures(t *testing.T) {
	log, logs := testLogger()
	m := NewMetrics(nil)
	release := make(chan struct{})
	defer close(release)
	mk := func(checks ...Check) *Pipeline {
		return NewPipeline(PipelineOptions{Logger: log, Metrics: m, CheckTimeout: 50 * time.Millisecond}, checks...)
	}
	erring := checkFunc{"spf", func(_ context.Context, _ *Request, d *Decision) error {
		d.Reject("550 5.7.23 half done", "fail")
		d.AddHeader("Received-SPF", "x")
		d.WaiveGreylisting("x")
		return errors.New("dns: connection refused")
	}}
	panicking := checkFunc{"rbl", func(context.Context, *Request, *Decision) error {
		var m map[string]int
		m["boom"]++
		return nil
	}}
	stuck := checkFunc{"stuck", func(_ context.Context, _ *Request, d *Decision) error {
		<-release // ignores ctx on purpose
		d.Reject("550 too late", "late")
		return nil
	}}
	greylist := checkFunc{"greylist", func(_ context.Context, _ *Request, d *Decision) error { return greylistCheck(d) }}

	// An erring check leaves no trace: the next one still greylists.
	res := mk(erring, greylist).Decide(context.Background(), mustParse(t, postfixRCPT))
	if !strings.HasPrefix(res.Action, "DEFER_IF_PERMIT") || res.Checks[0].Err == nil {
		t.Errorf("error: %q %+v", res.Action, res.Checks)
	}
	res = mk(erring).Decide(context.Background(), mustParse(t, postfixRCPT))
	if res.Action != "DUNNO" {
		t.Errorf("error alone: %q", res.Action)
	}
	res = mk(panicking).Decide(context.Background(), mustParse(t, postfixRCPT))
	var pe *PanicError
	if res.Action != "DUNNO" || !errors.As(res.Checks[0].Err, &pe) {
		t.Errorf("panic: %q %v", res.Action, res.Checks[0].Err)
	}
	res = mk(panicking, greylist).Decide(context.Background(), mustParse(t, postfixRCPT))
	if !strings.HasPrefix(res.Action, "DEFER_IF_PERMIT") {
		t.Errorf("panic then greylist: %q", res.Action)
	}
	res = mk(stuck, greylist).Decide(context.Background(), mustParse(t, postfixRCPT))
	if res.Action != "DUNNO" || !errors.Is(res.Checks[0].Err, context.DeadlineExceeded) ||
		!errors.Is(res.Checks[1].Err, context.DeadlineExceeded) {
		t.Errorf("stuck: %q %+v", res.Action, res.Checks)
	}
	for check, want := range map[string]float64{"spf": 2, "rbl": 2, "stuck": 1, "greylist": 1} {
		if got := counterValue(t, m.checkErrors.WithLabelValues(check)); got != want {
			t.Errorf("check_errors_total{%s} = %v, want %v", check, got, want)
		}
	}
	if l := logs.lines("level=ERROR", "check failed", "check=rbl", "assignment to entry in nil map", "stack="); len(l) != 2 {
		t.Errorf("panic logs: %q", l)
	}
	if l := logs.lines("level=ERROR", "check=spf", "connection refused"); len(l) != 2 {
		t.Errorf("error logs: %q", l)
	}
	if l := logs.lines("msg=decision", "checks=stuck:", "(error)"); len(l) != 1 {
		t.Errorf("decision with stuck check: %q", l)
	}
}

// headerChecks are what SPF and greylisting do on a passing message: each
// asks for its header on every recipient.
func headerChecks() []Check {
	return []Check{
		checkFunc{"spf", func(_ context.Context, req *Request, d *Decision) error {
			d.AddHeader("Received-SPF", "Pass (mailfrom) identity=mailfrom; client-ip="+req.ClientAddress)
			return nil
		}},
		checkFunc{"greylist", func(_ context.Context, req *Request, d *Decision) error {
			if strings.HasPrefix(req.Recipient, "grey") {
				return greylistCheck(d)
			}
			d.AddHeader("X-Greylist", "delayed 301 seconds by postgate; "+req.Recipient)
			return nil
		}},
	}
}

func TestPrependAcrossRecipients(t *testing.T) {
	m := NewMetrics(nil)
	p := NewPipeline(PipelineOptions{Logger: discardLogger(), Metrics: m}, headerChecks()...)
	decide := func(set map[string]string) string {
		return p.Decide(context.Background(), mustParse(t, request(set))).Action
	}
	// Two recipients, two headers: one at each RCPT, never twice.
	got := []string{
		decide(map[string]string{"recipient": "a@example.net"}),
		decide(map[string]string{"recipient": "b@example.net"}),
		decide(map[string]string{"recipient": "c@example.net"}),
		decide(map[string]string{"protocol_state": "DATA", "recipient": ""}),
	}
	want := []string{
		"PREPEND Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.10",
		"PREPEND X-Greylist: delayed 301 seconds by postgate; a@example.net",
		"DUNNO", "DUNNO",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reply %d = %q, want %q", i, got[i], want[i])
		}
	}
	if v := counterValue(t, m.requests.WithLabelValues("PREPEND", ReasonPass)); v != 2 {
		t.Errorf("requests_total{PREPEND,pass} = %v", v)
	}

	// One recipient: the second header waits for DATA; none at END-OF-MESSAGE.
	inst := map[string]string{"instance": "other.1"}
	if a := decide(inst); !strings.HasPrefix(a, "PREPEND Received-SPF:") {
		t.Errorf("RCPT: %q", a)
	}
	if a := decide(map[string]string{"instance": "other.1", "protocol_state": "END-OF-MESSAGE"}); a != "DUNNO" {
		t.Errorf("END-OF-MESSAGE: %q", a)
	}
	if a := decide(map[string]string{"instance": "other.1", "protocol_state": "DATA"}); !strings.HasPrefix(a, "PREPEND X-Greylist:") {
		t.Errorf("DATA: %q", a)
	}

	// A greylisted recipient carries no header; it goes with the next reply.
	if a := decide(map[string]string{"instance": "grey.1", "recipient": "grey@example.net"}); !strings.HasPrefix(a, "DEFER_IF_PERMIT") {
		t.Errorf("greylisted: %q", a)
	}
	if a := decide(map[string]string{"instance": "grey.1", "recipient": "x@example.net"}); !strings.HasPrefix(a, "PREPEND Received-SPF:") {
		t.Errorf("after greylisted: %q", a)
	}

	// Without an instance nothing can be spread: the first header only.
	if a := decide(map[string]string{"instance": ""}); !strings.HasPrefix(a, "PREPEND Received-SPF:") {
		t.Errorf("no instance: %q", a)
	}
}

func TestPrependSanitized(t *testing.T) {
	log, logs := testLogger()
	p := NewPipeline(PipelineOptions{Logger: log}, checkFunc{"x", func(_ context.Context, _ *Request, d *Decision) error {
		d.AddHeader("Bad Name", "v")
		d.AddHeader("X-Injected", "a\r\nX-Evil: 1\n")
		return nil
	}})
	res := p.Decide(context.Background(), mustParse(t, postfixRCPT))
	if res.Action != "PREPEND X-Injected: a  X-Evil: 1" {
		t.Errorf("Action = %q", res.Action)
	}
	if len(logs.lines("invalid header name", `header="Bad Name"`)) != 1 {
		t.Errorf("invalid header not logged:\n%s", logs)
	}
}

func TestHeaderCacheBounds(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewHeaderCache(3, time.Hour, func() time.Time { return now })
	h := []Header{{"X-A", "1"}, {"X-B", "2"}}
	if got, ok, _ := c.next("m1", h, true); !ok || got.Name != "X-A" {
		t.Fatalf("first pop: %v %v", got, ok)
	}
	// Within the TTL the emitted name is remembered.
	now = now.Add(59 * time.Minute)
	if got, ok, dropped := c.next("m1", h, true); !ok || got.Name != "X-B" || dropped != 2 {
		t.Fatalf("second pop: %v %v dropped %d", got, ok, dropped)
	}
	// After the TTL the message is forgotten.
	now = now.Add(61 * time.Minute)
	if got, ok, _ := c.next("m1", h, true); !ok || got.Name != "X-A" {
		t.Fatalf("after TTL: %v %v", got, ok)
	}
	for i := range 10 {
		c.next("n"+string(rune('0'+i)), h, false)
	}
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3 (size bound)", c.Len())
	}
	// m1 was least recently used: evicted.
	if _, ok, _ := c.next("m1", nil, true); ok {
		t.Errorf("evicted instance still has pending headers")
	}
	// A pop for an unknown instance with nothing to add stores nothing.
	c.next("unknown", nil, true)
	if c.Len() != 3 {
		t.Errorf("Len = %d after an empty pop", c.Len())
	}
	// Expired entries at the old end go even without size pressure.
	now = now.Add(2 * time.Hour)
	c.next("fresh", h, false)
	if c.Len() != 1 {
		t.Errorf("Len = %d after expiry, want 1", c.Len())
	}
}

func TestMetricsRegisterTwice(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m1 := NewMetrics(reg)
	m2 := NewMetrics(reg) // a reload: same collectors
	m1.requests.WithLabelValues("DUNNO", "pass").Inc()
	m2.requests.WithLabelValues("DUNNO", "pass").Inc()
	if got := counterValue(t, m1.requests.WithLabelValues("DUNNO", "pass")); got != 2 {
		t.Errorf("shared counter = %v, want 2", got)
	}
	m1.duration.Observe(0.001)
	m1.connections.Set(0)
	m1.checkErrors.WithLabelValues("spf")
	m1.protocolErrors.WithLabelValues("malformed")
	families, err := reg.Gather() // the pedantic registry checks consistency
	if err != nil || len(families) != 5 {
		t.Errorf("gathered %d metric families, err %v", len(families), err)
	}
}
