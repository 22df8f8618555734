package rbl

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	def := DefaultThresholds
	gross := Thresholds{Reject: 5, Greylist: 1, Allowlist: -1}
	never := Thresholds{Reject: 0, Greylist: 0, Allowlist: -3}
	tests := []struct {
		t     Thresholds
		score int
		want  Outcome
	}{
		{def, 0, Neutral},
		{def, 2, Neutral},
		{def, 3, Reject},
		{def, 100, Reject},
		{def, -1, WaiveGreylisting},
		{def, -5, WaiveGreylisting},
		{gross, 0, Neutral},
		{gross, 1, RequireGreylisting},
		{gross, 4, RequireGreylisting},
		{gross, 5, Reject},
		{gross, -1, WaiveGreylisting},
		{never, 1000, Neutral},
		{never, -2, Neutral},
		{never, -3, WaiveGreylisting},
	}
	for _, tt := range tests {
		if got := (Report{Score: tt.score}).Decide(tt.t); got != tt.want {
			t.Errorf("%+v: Decide(score %d) = %v, want %v", tt.t, tt.score, got, tt.want)
		}
	}
	if !def.GreylistsByDefault() || gross.GreylistsByDefault() {
		t.Error("GreylistsByDefault wrong")
	}
}

func TestThresholdsValidate(t *testing.T) {
	for _, ok := range []Thresholds{DefaultThresholds, {0, 0, -1}, {5, 1, -1}, {1, 1, 0}, {0, 2, 1}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []Thresholds{{-1, 0, -1}, {3, -1, -1}, {3, 0, 3}, {0, 2, 2}, {3, 4, -1}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func mustParse(t testing.TB, s string) List {
	t.Helper()
	l, err := ParseList(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRejectText(t *testing.T) {
	zen := mustParse(t, "zen.spamhaus.org=127.0.0.[2..11]*3")
	hit := Result{List: zen, Targets: TargetIP, Subject: "192.0.2.1", Status: Listed, Weight: 3}
	got := RejectText(hit, "https://www.spamhaus.org/query/ip/192.0.2.1")
	want := "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := RejectText(hit, ""); got != "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org" {
		t.Errorf("without reason: %q", got)
	}
	// A hostile TXT cannot inject lines or control bytes into the reply.
	got = RejectText(hit, "bad\r\n250 ok\x00\tmore  é")
	if strings.ContainsAny(got, "\r\n\x00\t") || !strings.HasSuffix(got, "; bad 250 ok? more ?") {
		t.Errorf("unsanitized: %q", got)
	}
	if got := RejectText(hit, strings.Repeat("x", 2000)); len(got) > 512 {
		t.Errorf("reply of %d bytes", len(got))
	}
	dbl := mustParse(t, "sender,helo:dbl.spamhaus.org")
	got = RejectText(Result{List: dbl, Targets: TargetHelo, Subject: "spam.example"}, "")
	if got != "554 5.7.1 Service unavailable; helo [spam.example] blocked using dbl.spamhaus.org" {
		t.Errorf("helo: %q", got)
	}
	got = RejectText(Result{List: dbl, Targets: TargetSender | TargetHelo, Subject: "spam.example"}, "")
	if !strings.Contains(got, "sender domain [spam.example]") {
		t.Errorf("sender: %q", got)
	}
}

func TestTopHit(t *testing.T) {
	a, b := mustParse(t, "a.test*2"), mustParse(t, "b.test*5")
	w := mustParse(t, "w.test*-5")
	r := Report{Results: []Result{
		{List: w, Status: Listed, Weight: -5},
		{List: a, Status: Listed, Weight: 2},
		{List: b, Status: NotListed},
		{List: b, Status: Listed, Weight: 5},
		{List: a, Status: Listed, Weight: 0},
	}}
	hit, ok := r.TopHit()
	if !ok || hit.List.Zone != "b.test" {
		t.Errorf("TopHit = %v %v", hit.List, ok)
	}
	if _, ok := (Report{Results: r.Results[:1]}).TopHit(); ok {
		t.Error("an allowlist hit is no reject reason")
	}
	if n := len(r.Hits()); n != 4 {
		t.Errorf("Hits: %d", n)
	}
}

func TestFormatReport(t *testing.T) {
	zen := mustParse(t, "zen.dq.spamhaus.net=127.0.0.[2..11]*3")
	dbl := mustParse(t, "domain:dbl.spamhaus.org")
	r := Report{Score: 3, Results: []Result{
		{List: zen, Targets: TargetIP, Subject: "192.0.2.1", Name: "1.2.0.192.<DQS-key>.zen.dq.spamhaus.net",
			Status: Listed, Answers: []netip.Addr{netip.MustParseAddr("127.0.0.4")}, Meaning: "XBL", Weight: 3},
		{List: dbl, Targets: TargetDomain, Status: Skipped, Meaning: "nothing to query"},
	}}
	var b strings.Builder
	if err := FormatReport(&b, r, DefaultThresholds); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"zen.dq.spamhaus.net=127.0.0.[2..11]*3", "1.2.0.192.<DQS-key>.zen.dq.spamhaus.net", "127.0.0.4",
		"listed: XBL", "+3", "skipped: nothing to query", "score 3: reject (score 3 >= reject_score 3)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	_ = FormatReport(&b, Report{Score: 1}, Thresholds{Reject: 5, Greylist: 2, Allowlist: -1})
	if !strings.Contains(b.String(), "not greylisted (score 1 < greylist_score 2)") {
		t.Errorf("got %s", b.String())
	}
}
