package dkim

import (
	"bufio"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postgate/internal/resolver"
)

// parseMessage splits a whole message into fields and body.
func parseMessage(t testing.TB, msg string) ([]Field, string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(msg))
	fields, _, err := readFields(br)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(br)
	return fields, string(body)
}

// signString signs msg, streaming its body in chunks of chunk bytes, and
// returns the signatures.
func signString(t testing.TB, keys []*Key, msg string, opts *SignOptions, chunk int) []Signature {
	t.Helper()
	fields, body := parseMessage(t, msg)
	s, err := NewSigner(keys, fields, opts)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, body, chunk)
	sigs, err := s.Close()
	if err != nil {
		t.Fatal(err)
	}
	return sigs
}

func feed(t testing.TB, w io.Writer, body string, chunk int) {
	t.Helper()
	for i := 0; i < len(body); i += chunk {
		if _, err := w.Write([]byte(body[i:min(i+chunk, len(body))])); err != nil {
			t.Fatal(err)
		}
	}
}

// verifyString verifies msg streaming its body in chunks.
func verifyString(t testing.TB, res resolver.Resolver, msg string, opts *VerifyOptions, chunk int) []Result {
	t.Helper()
	fields, body := parseMessage(t, msg)
	if opts == nil {
		opts = &VerifyOptions{}
	}
	if opts.Resolver == nil {
		opts.Resolver = res
	}
	v, err := NewVerifier(context.Background(), fields, opts)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, v, body, chunk)
	results, err := v.Close()
	if err != nil {
		t.Fatal(err)
	}
	return results
}

func prepend(sigs []Signature, msg string) string {
	var b strings.Builder
	for _, s := range sigs {
		b.WriteString(s.String())
	}
	b.WriteString(msg)
	return b.String()
}

// edgeMessages are the canonicalization edge cases, all CRLF.
var edgeMessages = map[string]string{
	"plain": crlf("Received: from client.example (client.example [192.0.2.1])\n\tby mx.example.com; Sat, 21 Nov 2026 06:00:00 +0000\n" +
		"From: Joe <joe@example.com>\nTo: suzie@example.net\nSubject: Is dinner ready?\nDate: Sat, 21 Nov 2026 06:00:00 +0000\nMessage-ID: <1@example.com>\n\nHi.\n\nWe lost the game.  Are you hungry yet?\n\nJoe.\n"),
	"trailing whitespace":        crlf("From: joe@example.com\nSubject:   spaced \t \nTo: a@example.net\n\nline with trailing spaces   \nand tabs\t\t\n  \n\t\n\n\n"),
	"empty body":                 crlf("From: joe@example.com\nSubject: nothing\n\n"),
	"no body separator":          crlf("From: joe@example.com\nSubject: header only\n"),
	"folded headers":             crlf("From: Joe\n  Sixpack\n\t<joe@example.com>\nSubject: a very\n long\n\tsubject\nTo: a@example.net,\n b@example.net\n\nbody\n"),
	"body without final newline": "From: joe@example.com\r\nSubject: x\r\n\r\nno newline at the end",
	"many blank lines at end":    crlf("From: joe@example.com\nSubject: x\n\nbody\n\n\n\n\n"),
	"8bit and long line":         crlf("From: =?utf-8?q?J=C3=B6e?= <joe@example.com>\nSubject: caf\xc3\xa9\n\n" + strings.Repeat("x", 2000) + "\n"),
}

func testKeys(t testing.TB) (*Key, *Key) {
	rk := &Key{Domain: "example.com", Selector: "rsa2048", Signer: testRSA(t)}
	ek := &Key{Domain: "example.com", Selector: "ed", Signer: testEd25519(t)}
	return rk, ek
}

func TestSignVerifyRoundTrip(t *testing.T) {
	rk, ek := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	for _, c := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"} {
		for name, msg := range edgeMessages {
			for _, chunk := range []int{1, 7, 1 << 20} {
				if chunk == 1 && c != "relaxed/relaxed" && c != "simple/simple" {
					continue
				}
				sigs := signString(t, []*Key{rk, ek}, msg, &SignOptions{Canonicalization: c}, chunk)
				if len(sigs) != 2 {
					t.Fatalf("%d signatures", len(sigs))
				}
				results := verifyString(t, res, prepend(sigs, msg), nil, chunk)
				if len(results) != 2 {
					t.Fatalf("%s %s: %d results", c, name, len(results))
				}
				for i, r := range results {
					if r.Status != StatusPass {
						t.Errorf("%s %s chunk %d: signature %d: %s %v", c, name, chunk, i, r.Status, r.Err)
					}
				}
				if results[0].Algorithm != "rsa-sha256" || results[1].Algorithm != "ed25519-sha256" ||
					results[0].Selector != "rsa2048" || results[1].Selector != "ed" || results[0].Domain != "example.com" {
					t.Errorf("results %+v", results)
				}
			}
		}
	}
}

// TestLFInputVerifies: a message stored with LF line breaks (a file, the
// milter's folded header values) signs and verifies like its CRLF form.
func TestLFInputVerifies(t *testing.T) {
	rk, ek := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	for name, msg := range edgeMessages {
		lfMsg := strings.ReplaceAll(msg, "\r\n", "\n")
		for _, c := range []string{"relaxed/relaxed", "simple/simple"} {
			sigs := signString(t, []*Key{rk, ek}, lfMsg, &SignOptions{Canonicalization: c}, 5)
			// Signed from LF, verified in CRLF form and the other way round.
			for _, r := range verifyString(t, res, prepend(sigs, msg), nil, 64) {
				if r.Status != StatusPass {
					t.Errorf("%s %s LF-signed, CRLF-verified: %s %v", name, c, r.Status, r.Err)
				}
			}
			sigs = signString(t, []*Key{rk}, msg, &SignOptions{Canonicalization: c}, 64)
			var lfSig strings.Builder
			for _, s := range sigs {
				lfSig.WriteString(s.Name + ": " + s.ValueLF() + "\n")
			}
			for _, r := range verifyString(t, res, lfSig.String()+lfMsg, nil, 3) {
				if r.Status != StatusPass {
					t.Errorf("%s %s CRLF-signed, LF-verified: %s %v", name, c, r.Status, r.Err)
				}
			}
		}
	}
}

// TestMilterStyleFields: header values as a milter gets them with the
// leading-space option (leading space kept, folds with bare LF) sign the
// same bytes a verifier later sees on the wire.
func TestMilterStyleFields(t *testing.T) {
	rk, _ := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk))
	fields := []Field{
		{"From", " Joe <joe@example.com>"},
		{"Subject", " folded\n\tsubject"},
		{"To", "  two-space@example.net"},
	}
	body := "body line\r\n"
	for _, c := range []string{"simple/simple", "relaxed/relaxed"} {
		s, err := NewSigner([]*Key{rk}, fields, &SignOptions{Canonicalization: c})
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte(body))
		sigs, err := s.Close()
		if err != nil {
			t.Fatal(err)
		}
		wire := sigs[0].String() + "From: Joe <joe@example.com>\r\nSubject: folded\r\n\tsubject\r\nTo:  two-space@example.net\r\n\r\n" + body
		if r := verifyString(t, res, wire, nil, 100); r[0].Status != StatusPass {
			t.Errorf("%s: %s %v", c, r[0].Status, r[0].Err)
		}
	}
}

func TestSignedHeaderList(t *testing.T) {
	rk, _ := testKeys(t)
	msg := crlf("Received: a\nReceived: b\nReturn-Path: <x@y>\nFrom: joe@example.com\nTo: a@b\nTo: c@d\nSubject: s\nX-Custom: c\n\nbody\n")
	sig := signString(t, []*Key{rk}, msg, nil, 100)[0]
	h := stripFWS(tagValue(sig.Value, "h"))
	if h != "From:Subject:To:To:From" {
		t.Errorf("h=%s, want From:Subject:To:To:From (present instances in list order, From oversigned)", h)
	}
	for _, bad := range []string{"Received", "Return-Path", "X-Custom"} {
		if strings.Contains(strings.ToLower(h), strings.ToLower(bad)) {
			t.Errorf("h= signs %s", bad)
		}
	}
	if c := tagValue(sig.Value, "c"); c != "relaxed/relaxed" {
		t.Errorf("c=%s", c)
	}
	if a := tagValue(sig.Value, "a"); a != "rsa-sha256" {
		t.Errorf("a=%s", a)
	}
	sig = signString(t, []*Key{rk}, msg, &SignOptions{SignedHeaders: []string{"Subject", "X-Custom"}, OversignedHeaders: []string{}}, 100)[0]
	if h := stripFWS(tagValue(sig.Value, "h")); h != "Subject:X-Custom:From" {
		t.Errorf("custom h=%s, want Subject:X-Custom:From", h)
	}
	if !strings.HasPrefix(sig.Value, "a=") || strings.HasSuffix(sig.Value, "\n") || sig.Name != "DKIM-Signature" {
		t.Errorf("signature %q: %q", sig.Name, sig.Value)
	}
	if strings.Contains(sig.ValueLF(), "\r") || !strings.Contains(sig.ValueLF(), "\n ") {
		t.Errorf("ValueLF %q", sig.ValueLF())
	}
	// An added From: breaks the oversigned signature.
	_, res := newDNS(t, keyRecord(t, rk))
	sig = signString(t, []*Key{rk}, msg, nil, 100)[0]
	forged := sig.String() + "From: evil@attacker.example\r\n" + msg
	if r := verifyString(t, res, forged, nil, 100); r[0].Status != StatusFail {
		t.Errorf("second From: %s", r[0].Status)
	}
}

func tagValue(sigValue, tag string) string {
	for _, spec := range strings.Split(sigValue, ";") {
		k, v, _ := strings.Cut(spec, "=")
		if stripFWS(k) == tag {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestParseCanonicalization(t *testing.T) {
	for in, want := range map[string]string{"": "relaxed/relaxed", "relaxed": "relaxed/simple", "Simple/Relaxed": "simple/relaxed", "simple/simple": "simple/simple"} {
		h, b, err := ParseCanonicalization(in)
		if err != nil || h+"/"+b != want {
			t.Errorf("%q: %s/%s %v", in, h, b, err)
		}
	}
	for _, bad := range []string{"nowsp", "relaxed/", "a/b/c"} {
		if _, _, err := ParseCanonicalization(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	rk, _ := testKeys(t)
	if _, err := NewSigner([]*Key{rk}, nil, &SignOptions{Canonicalization: "loose"}); err == nil {
		t.Error("NewSigner accepted c=loose")
	}
	if _, err := NewSigner(nil, nil, nil); !errors.Is(err, ErrNoKey) {
		t.Errorf("no keys: %v", err)
	}
}

func TestVerifyFailures(t *testing.T) {
	rk, ek := testKeys(t)
	revoked := &Key{Domain: "example.com", Selector: "revoked", Signer: rk.Signer}
	slow := &Key{Domain: "example.com", Selector: "slow", Signer: rk.Signer}
	broken := &Key{Domain: "example.com", Selector: "broken", Signer: rk.Signer}
	missing := &Key{Domain: "example.com", Selector: "missing", Signer: rk.Signer}
	nodata := &Key{Domain: "example.com", Selector: "nodata", Signer: rk.Signer}
	srv, res := newDNS(t,
		"example.com. 0 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
		keyRecord(t, rk), keyRecord(t, ek),
		zoneTXT("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p="),
		keyRecord(t, slow), keyRecord(t, broken),
		"nodata._domainkey.example.com. 0 IN A 192.0.2.1",
	)
	srv.Fail("broken._domainkey.example.com", dns.RcodeServerFailure)
	srv.Drop("slow._domainkey.example.com")
	msg := edgeMessages["plain"]

	check := func(name string, k *Key, mutate func(string) string, want Status, reason string) {
		t.Helper()
		signed := prepend(signString(t, []*Key{k}, msg, nil, 100), msg)
		if mutate != nil {
			signed = mutate(signed)
		}
		start := time.Now()
		r := verifyString(t, res, signed, &VerifyOptions{Timeout: 300 * time.Millisecond}, 100)
		if len(r) != 1 || r[0].Status != want || (reason != "" && (r[0].Err == nil || !strings.Contains(r[0].Err.Error(), reason))) {
			t.Errorf("%s: %+v, want %s (%s)", name, r, want, reason)
		}
		if time.Since(start) > 20*time.Second {
			t.Errorf("%s: took %v: the lookup deadline did not apply", name, time.Since(start))
		}
		ar := AuthResults("mx.example.org", r)
		if !strings.Contains(ar, "; dkim="+string(want)+" ") {
			t.Errorf("%s: A-R %q", name, ar)
		}
	}
	check("good", rk, nil, StatusPass, "")
	check("body changed", rk, func(s string) string { return strings.Replace(s, "We lost", "We won", 1) }, StatusFail, "body hash")
	check("header changed", ek, func(s string) string { return strings.Replace(s, "Subject: Is", "Subject: Was", 1) }, StatusFail, "signature did not verify")
	check("unsigned header added", rk, func(s string) string { return strings.Replace(s, "\r\n\r\n", "\r\nX-Spam: no\r\n\r\n", 1) }, StatusPass, "")
	check("revoked", revoked, nil, StatusPermError, "revoked")
	check("NXDOMAIN", missing, nil, StatusPermError, "no key")
	check("NODATA", nodata, nil, StatusPermError, "no key")
	check("SERVFAIL", broken, nil, StatusTempError, "")
	check("timeout", slow, nil, StatusTempError, "")
	check("l= tag", rk, func(s string) string { return strings.Replace(s, "DKIM-Signature: ", "DKIM-Signature: l=3; ", 1) }, StatusPolicy, "body length")
	check("bad tags", rk, func(s string) string { return strings.Replace(s, "DKIM-Signature: ", "DKIM-Signature: v=2; ", 1) }, StatusPermError, "")
}

// TestVerifyCancelled: a cancelled context is a temperror, not a fail.
func TestVerifyCancelled(t *testing.T) {
	rk, _ := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk))
	msg := edgeMessages["plain"]
	signed := prepend(signString(t, []*Key{rk}, msg, nil, 100), msg)
	fields, body := parseMessage(t, signed)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, err := NewVerifier(ctx, fields, &VerifyOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	feed(t, v, body, 100)
	r, err := v.Close()
	if err != nil || len(r) != 1 || r[0].Status != StatusTempError {
		t.Errorf("%+v %v", r, err)
	}
}

func TestMaxVerifications(t *testing.T) {
	rk, ek := testKeys(t)
	srv, res := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	msg := edgeMessages["plain"]
	var sigs []Signature
	for range 4 {
		sigs = append(sigs, signString(t, []*Key{rk, ek}, msg, nil, 100)...)
	}
	r := verifyString(t, res, prepend(sigs, msg), nil, 100)
	if len(r) != DefaultMaxVerifications {
		t.Fatalf("%d results, want %d", len(r), DefaultMaxVerifications)
	}
	for _, x := range r {
		if x.Status != StatusPass {
			t.Errorf("%+v", x)
		}
	}
	srv.ResetLog()
	r = verifyString(t, res, prepend(sigs, msg), &VerifyOptions{MaxVerifications: 2}, 100)
	if len(r) != 2 {
		t.Errorf("%d results, want 2", len(r))
	}
	if n := srv.Queries("rsa2048._domainkey.example.com", dns.TypeTXT) + srv.Queries("ed._domainkey.example.com", dns.TypeTXT); n != 2 {
		t.Errorf("%d key lookups for 2 verifications", n)
	}
}

func TestUnsigned(t *testing.T) {
	_, res := newDNS(t)
	r := verifyString(t, res, edgeMessages["plain"], nil, 10)
	if len(r) != 0 {
		t.Errorf("%+v", r)
	}
	if ar := AuthResults("mx.example.org", r); ar != "mx.example.org; dkim=none" {
		t.Errorf("A-R %q", ar)
	}
	// An unsigned message needs no resolver.
	fields, _ := parseMessage(t, edgeMessages["plain"])
	v, err := NewVerifier(context.Background(), fields, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Write([]byte("x"))
	if r, err := v.Close(); err != nil || r != nil {
		t.Errorf("%v %v", r, err)
	}
}

// TestRFC8463Example verifies the signed example message of RFC 8463
// appendix A with its published keys, and re-signs it with its Ed25519 key.
func TestRFC8463Example(t *testing.T) {
	const rfcMsg = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\n" +
		" d=football.example.com; i=@football.example.com;\n" +
		" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\n" +
		" subject : date : message-id : from : subject : date;\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\n" +
		" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\n" +
		" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\n" +
		"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\n" +
		" d=football.example.com; i=@football.example.com;\n" +
		" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\n" +
		" date : message-id : from : subject : date;\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\n" +
		" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\n" +
		" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\n" +
		" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\n" +
		rfcBody
	_, res := newDNS(t,
		`brisbane._domainkey.football.example.com. 0 IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="`,
		`test._domainkey.football.example.com. 0 IN TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"`,
	)
	for _, m := range []string{rfcMsg, crlf(rfcMsg)} {
		r := verifyString(t, res, m, nil, 16)
		if len(r) != 2 {
			t.Fatalf("%d results", len(r))
		}
		if r[0].Status != StatusPass || r[0].Algorithm != "ed25519-sha256" || r[0].Selector != "brisbane" || r[0].BPrefix != "/gCrinpc" || r[0].Identifier != "@football.example.com" {
			t.Errorf("Ed25519 signature: %+v", r[0])
		}
		if r[1].Status != StatusPass || r[1].Algorithm != "rsa-sha256" || r[1].Selector != "test" {
			t.Errorf("RSA signature: %+v", r[1])
		}
	}
	// Our signature with the RFC key has the RFC's body hash.
	ek := &Key{Domain: "football.example.com", Selector: "brisbane", Signer: testEd25519(t)}
	sig := signString(t, []*Key{ek}, crlf(rfcBody), nil, 10)[0]
	if bh := tagValue(sig.Value, "bh"); bh != "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=" {
		t.Errorf("bh=%s", bh)
	}
	if r := verifyString(t, res, sig.String()+crlf(rfcBody), nil, 10); r[0].Status != StatusPass {
		t.Errorf("re-signed: %+v", r[0])
	}
}

const rfcBody = "From: Joe SixPack <joe@football.example.com>\n" +
	"To: Suzie Q <suzie@shopping.example.net>\n" +
	"Subject: Is dinner ready?\n" +
	"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\n" +
	"Message-ID: <20030712040037.46341.5F8J@football.example.com>\n" +
	"\n" +
	"Hi.\n" +
	"\n" +
	"We lost the game.  Are you hungry yet?\n" +
	"\n" +
	"Joe.\n"

func TestAuthor(t *testing.T) {
	good := map[string]string{
		" Joe <joe@Example.COM>":                       "joe@example.com",
		" Joe@EXAMPLE.com":                             "Joe@example.com",
		" \"Doe, John\" <john@example.com> (comment)":  "john@example.com",
		" =?koi8-r?B?8NLP18XSy8E=?= <joe@example.com>": "joe@example.com",
		" Joe\r\n\t<joe@example.com>":                  "joe@example.com",
	}
	for v, want := range good {
		got, err := Author([]Field{{"Subject", " x"}, {"from", v}})
		if err != nil || got != want {
			t.Errorf("From:%s → %q %v, want %q", v, got, err, want)
		}
	}
	bad := [][]Field{
		{{"Subject", " x"}},
		{{"From", " a@example.com"}, {"From", " b@example.com"}},
		{{"From", " a@example.com, b@example.com"}},
		{{"From", " not an address"}},
		{{"From", " <>"}},
	}
	for _, f := range bad {
		if got, err := Author(f); err == nil {
			t.Errorf("%v → %q, want an error", f, got)
		}
	}
}

func TestSignMessageAndVerifyMessage(t *testing.T) {
	rk, ek := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	kr := NewKeyring([]Rule{{Pattern: "*@example.com", Key: rk}, {Pattern: "*@example.com", Key: ek}})
	for _, msg := range []string{edgeMessages["plain"], strings.ReplaceAll(edgeMessages["folded headers"], "\r\n", "\n")} {
		for _, seekable := range []bool{true, false} {
			var out strings.Builder
			var r io.Reader = strings.NewReader(msg)
			if !seekable {
				r = io.MultiReader(r)
			}
			sigs, err := SignMessage(&out, r, kr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(sigs) != 2 || !strings.HasSuffix(out.String(), msg) {
				t.Fatalf("output %q", out.String())
			}
			if strings.Contains(msg, "\r\n") != strings.Contains(out.String(), "\r\n") {
				t.Errorf("line endings of the signature differ from the message's")
			}
			results, err := VerifyMessage(context.Background(), strings.NewReader(out.String()), &VerifyOptions{Resolver: res})
			if err != nil || len(results) != 2 || results[0].Status != StatusPass || results[1].Status != StatusPass {
				t.Errorf("VerifyMessage: %+v %v", results, err)
			}
		}
	}
	_, err := SignMessage(io.Discard, strings.NewReader("From: joe@example.net\r\n\r\nx\r\n"), kr, nil)
	if !errors.Is(err, ErrNoKey) {
		t.Errorf("foreign author: %v", err)
	}
	_, err = SignMessage(io.Discard, strings.NewReader(" continuation first\r\n\r\n"), kr, nil)
	if err == nil {
		t.Error("malformed header accepted")
	}
}

func TestAbort(t *testing.T) {
	rk, _ := testKeys(t)
	srv, res := newDNS(t, keyRecord(t, rk))
	srv.Drop(AllTXT)
	msg := edgeMessages["plain"]
	fields, _ := parseMessage(t, prepend(signString(t, []*Key{rk}, msg, nil, 100), msg))
	v, err := NewVerifier(context.Background(), fields, &VerifyOptions{Resolver: res, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { v.Abort(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Abort did not cancel the pending lookup")
	}
	if _, err := v.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	s, err := NewSigner([]*Key{rk}, fields, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("partial"))
	s.Abort()
	if _, err := s.Close(); err == nil {
		t.Error("Close after Abort succeeded")
	}
}

// AllTXT makes dnstest hooks apply to every name.
const AllTXT = ""

func ExampleAuthResults() {
	fmt.Println(AuthResults("mx.example.org", []Result{
		{Status: StatusPass, Domain: "example.com", Selector: "sel", Algorithm: "rsa-sha256", BPrefix: "abcdefgh"},
		{Status: StatusFail, Domain: "example.com", Selector: "ed", Algorithm: "ed25519-sha256", BPrefix: "12345678", Err: errors.New("dkim: body hash did not verify")},
	}))
	// Output: mx.example.org; dkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=abcdefgh; dkim=fail reason="body hash did not verify" header.d=example.com header.s=ed header.a=ed25519-sha256 header.b=12345678
}

// TestFieldCannotInjectFields: a value with a bare line break stays one
// field, so a smuggled DKIM-Signature cannot shift the results.
func TestFieldCannotInjectFields(t *testing.T) {
	rk, _ := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk))
	msg := edgeMessages["plain"]
	fields, body := parseMessage(t, prepend(signString(t, []*Key{rk}, msg, nil, 100), msg))
	fields = append([]Field{{"X-Evil", " a\nDKIM-Signature: v=1; d=evil.example; s=x; a=rsa-sha256; b=AAAA; bh=AAAA; h=From"}}, fields...)
	v, err := NewVerifier(context.Background(), fields, &VerifyOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	v.Write([]byte(body))
	r, err := v.Close()
	if err != nil || len(r) != 1 || r[0].Domain != "example.com" || r[0].Status != StatusPass {
		t.Errorf("%+v %v", r, err)
	}
	if got := (Field{"X", " a\nb\r\nc\r\n\td"}).raw(); got != "X: a\r\n\tb\r\n\tc\r\n\td\r\n" {
		t.Errorf("raw = %q", got)
	}
}

// countingKey counts the signatures computed with it.
type countingKey struct {
	crypto.Signer
	n *atomic.Int32
}

func (k countingKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.n.Add(1)
	return k.Signer.Sign(rand, digest, opts)
}

// An aborted message costs no signature (an RSA-2048 signature is most of the
// CPU of signing); a finished one costs one per key.
func TestAbortComputesNoSignature(t *testing.T) {
	rk, ek := testKeys(t)
	var n atomic.Int32
	keys := []*Key{
		{Domain: rk.Domain, Selector: rk.Selector, Path: rk.Path, Signer: countingKey{rk.Signer, &n}},
		{Domain: ek.Domain, Selector: ek.Selector, Path: ek.Path, Signer: countingKey{ek.Signer, &n}},
	}
	fields, _ := parseMessage(t, edgeMessages["plain"])
	s, err := NewSigner(keys, fields, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("partial body\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Abort()
	if got := n.Load(); got != 0 {
		t.Errorf("aborted message: %d signatures computed, want 0", got)
	}

	s, err = NewSigner(keys, fields, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("whole body\r\n"))
	sigs, err := s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 2 || n.Load() != 2 {
		t.Errorf("finished message: %d signatures returned, %d computed; want 2 and 2", len(sigs), n.Load())
	}
}
