package dkim

import (
	"errors"
	"strings"
	"testing"
)

func TestAuthResultsQuoting(t *testing.T) {
	// Values from a forged signature try to smuggle a pass result.
	ar := AuthResults("mx.example.org", []Result{{
		Status:    StatusFail,
		Domain:    "evil.example; dkim=pass header.d=bank.example",
		Selector:  "s\r\nX-Injected: yes",
		Algorithm: "rsa-sha256",
		BPrefix:   "ab(cd)\"e",
		Err:       errors.New("dkim: signature did not verify: \"quoted\" \\ back\r\nslash"),
	}})
	want := `mx.example.org; dkim=fail reason="signature did not verify: \"quoted\" \\ backslash"` +
		` header.d="evil.example; dkim=pass header.d=bank.example" header.s="sX-Injected: yes" header.a=rsa-sha256 header.b="ab(cd)\"e"`
	if ar != want {
		t.Errorf("got  %s\nwant %s", ar, want)
	}
	if strings.ContainsAny(ar, "\r\n") {
		t.Error("line break in A-R")
	}
	// A pass carries no reason, base64 and addresses stay bare.
	ar = AuthResults("mx", []Result{{Status: StatusPass, Domain: "example.com", Identifier: "joe@example.com", Selector: "s", Algorithm: "ed25519-sha256", BPrefix: "a+b/c=d="}})
	if ar != "mx; dkim=pass header.d=example.com header.i=joe@example.com header.s=s header.a=ed25519-sha256 header.b=a+b/c=d=" {
		t.Errorf("pass: %s", ar)
	}
}

func TestHasAuthServID(t *testing.T) {
	cases := []struct {
		value string
		want  bool
	}{
		{"mx.example.org; dkim=pass header.d=example.com", true},
		{" MX.Example.ORG; spf=pass", true},
		{"mx.example.org 1; none", true},
		{"mx.example.org;none", true},
		{"mx.example.org", true},
		{"(comment) mx.example.org; dkim=pass", true},
		{"\r\n\t(nested (comment) \\) here)\r\n mx.example.org (x); dkim=pass", true},
		{`"mx.example.org"; dkim=pass`, true},
		{`"mx.exa\mple.org"; dkim=pass`, true},
		{"mx.example.org.evil; dkim=pass", false},
		{"evil.example; dkim=pass header.d=mx.example.org", false},
		{"(mx.example.org) evil.example; dkim=pass", false},
		{"", false},
		{"   ", false},
		{"(unterminated mx.example.org", false},
		{`"mx.example.org`, false},
		{"; dkim=pass", false},
	}
	for _, c := range cases {
		if got := HasAuthServID(c.value, "mx.example.org"); got != c.want {
			t.Errorf("HasAuthServID(%q) = %v", c.value, got)
		}
	}
}

func FuzzHasAuthServID(f *testing.F) {
	f.Add("mx.example.org; dkim=pass", "mx.example.org")
	f.Add("(c (n) \\)) \"q\\\"x\"; none", "q\"x")
	f.Add("((((", "x")
	f.Fuzz(func(t *testing.T, value, id string) {
		got := HasAuthServID(value, id)
		// Whatever A-R we produce is recognised as ours.
		if id != "" && !strings.ContainsAny(id, " \t\r\n;(\"\\") && !HasAuthServID(AuthResults(id, nil), id) {
			t.Errorf("our own header not recognised for %q", id)
		}
		_ = got
	})
}

func TestSummary(t *testing.T) {
	r := func(ss ...Status) []Result {
		var out []Result
		for _, s := range ss {
			out = append(out, Result{Status: s})
		}
		return out
	}
	cases := []struct {
		in   []Result
		want Status
	}{
		{nil, StatusNone},
		{r(StatusFail, StatusPass), StatusPass},
		{r(StatusTempError, StatusFail), StatusFail},
		{r(StatusPolicy), StatusFail},
		{r(StatusPermError, StatusTempError), StatusTempError},
		{r(StatusPermError), StatusPermError},
	}
	for _, c := range cases {
		if got := Summary(c.in); got != c.want {
			t.Errorf("Summary(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}
