package policy

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSanitizeReply(t *testing.T) {
	tests := []struct{ in, want string }{
		{"DUNNO", "DUNNO"},
		{"", ""},
		{"550 5.7.23 SPF fail\r\naction=OK", "550 5.7.23 SPF fail  action=OK"},
		{"PREPEND X-Test: a\nb", "PREPEND X-Test: a b"},
		{"  DUNNO \t", "DUNNO"},
		{"REJECT caf\xe9", "REJECT caf\uFFFD"},
		{"REJECT Grüße", "REJECT Grüße"},
		{"REJECT a\x00b\x7fc\u0085d\u2028e", "REJECT a b c d e"},
		{strings.Repeat("é", MaxReplyLength), strings.Repeat("é", MaxReplyLength/2)},
	}
	for _, tt := range tests {
		if got := sanitizeReply(tt.in); got != tt.want {
			t.Errorf("sanitizeReply(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestActionFormatting(t *testing.T) {
	tests := []struct {
		do   func(d *Decision)
		want string
	}{
		{func(d *Decision) {}, "DUNNO"},
		{func(d *Decision) { d.Reject("550 5.7.23 SPF fail", "fail") }, "550 5.7.23 SPF fail"},
		{func(d *Decision) { d.Reject("Blocked", "x") }, "REJECT Blocked"},
		{func(d *Decision) { d.Reject("451 4.7.1 not a reject code", "x") }, "REJECT 451 4.7.1 not a reject code"},
		{func(d *Decision) { d.Defer("451 4.7.24 SPF temperror", "x") }, "451 4.7.24 SPF temperror"},
		{func(d *Decision) { d.Defer("try later", "x") }, "DEFER try later"},
		{func(d *Decision) { d.DeferIfPermit("Greylisted, see http://x/", "new") }, "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://x/"},
		{func(d *Decision) { d.DeferIfPermit("4.7.1 Greylisted", "new") }, "DEFER_IF_PERMIT 4.7.1 Greylisted"},
		{func(d *Decision) { d.DeferIfPermit("Greylisted\r\nx", "new") }, "DEFER_IF_PERMIT 4.2.0 Greylisted  x"},
		// Stronger verdicts win whatever the order.
		{func(d *Decision) { d.DeferIfPermit("g", "new"); d.Reject("554 5.7.1 rbl", "zen") }, "554 5.7.1 rbl"},
		{func(d *Decision) { d.Reject("554 5.7.1 rbl", "zen"); d.Defer("451 4.3.0 x", "y") }, "554 5.7.1 rbl"},
		{func(d *Decision) { d.DeferIfPermit("first", "a"); d.DeferIfPermit("second", "b") }, "DEFER_IF_PERMIT 4.2.0 first"},
	}
	for i, tt := range tests {
		d := &Decision{}
		tt.do(d)
		if got := d.Action(); got != tt.want {
			t.Errorf("%d: Action() = %q, want %q", i, got, tt.want)
		}
	}
}

func TestActionVerb(t *testing.T) {
	for in, want := range map[string]string{
		"DUNNO": "DUNNO", "550 5.7.1 x": "REJECT", "451 4.3.0 x": "DEFER", "defer_if_permit 4.2.0 x": "DEFER_IF_PERMIT",
		"PREPEND X-A: b": "PREPEND", "REJECT": "REJECT", "free text": "OTHER", "5555 x": "OTHER",
	} {
		if got := actionVerb(in); got != want {
			t.Errorf("actionVerb(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzSanitizeReply(f *testing.F) {
	for _, s := range []string{"DUNNO", "550 5.7.23 fail\r\nx", "caf\xe9", "\u2028\u0085\x00", " a ", strings.Repeat("é", 1100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := sanitizeReply(s)
		if !utf8.ValidString(got) {
			t.Fatalf("not UTF-8: %q", got)
		}
		if strings.ContainsAny(got, "\r\n\x00") {
			t.Fatalf("control character left: %q", got)
		}
		if len(got) > MaxReplyLength {
			t.Fatalf("length %d over %d", len(got), MaxReplyLength)
		}
		if again := sanitizeReply(got); again != got {
			t.Fatalf("not idempotent: %q then %q", got, again)
		}
		if isCleanReply(s) && got != s {
			t.Fatalf("clean input changed: %q to %q", s, got)
		}
		// The reply line a client reads back is exactly the action.
		wire := "action=" + got + "\n\n"
		if strings.Index(wire, "\n") != len(wire)-2 {
			t.Fatalf("reply spans lines: %q", wire)
		}
	})
}
