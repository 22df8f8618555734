package dkim

import (
	"bufio"
	"regexp"
	"strings"
	"testing"
)

// FuzzMatchPattern checks the '*' matcher against the regexp OpenDKIM
// builds from a refile pattern.
func FuzzMatchPattern(f *testing.F) {
	f.Add("*@example.com", "joe@example.com")
	f.Add("j*e*@*.com", "jxeye@a.b.com")
	f.Add("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, p, s string) {
		if len(p) > 64 || len(s) > 256 {
			return
		}
		var re strings.Builder
		re.WriteString("(?is)^")
		for _, part := range strings.Split(p, "*") {
			re.WriteString(regexp.QuoteMeta(part))
			re.WriteString(".*")
		}
		expr := strings.TrimSuffix(re.String(), ".*") + "$"
		rx, err := regexp.Compile(expr)
		if err != nil {
			t.Skip()
		}
		// The regexp folds Unicode case, the matcher ASCII only: compare on
		// ASCII input.
		for _, c := range []byte(p + s) {
			if c >= 0x80 {
				return
			}
		}
		if got, want := matchPattern(p, s), rx.MatchString(s); got != want {
			t.Errorf("matchPattern(%q, %q) = %v, regexp says %v", p, s, got, want)
		}
	})
}

// FuzzReadFields: whatever header is accepted renders back to the same
// bytes (CRLF form), so what is signed is what was received.
func FuzzReadFields(f *testing.F) {
	f.Add("From: a@b\r\nSubject: x\r\n folded\r\n\r\nbody")
	f.Add("From:a@b\nX: \n\t\n\n")
	f.Add(" bad\r\n\r\n")
	f.Add("NoColon\r\n\r\n")
	f.Fuzz(func(t *testing.T, msg string) {
		fields, _, err := readFields(bufio.NewReader(strings.NewReader(msg)))
		if err != nil {
			return
		}
		hdr := string(headerBlock(fields))
		// The expected header: CRLF lines up to the first empty one.
		var want strings.Builder
		rest := msg
		for {
			line, after, ok := strings.Cut(rest, "\r\n")
			if !ok || strings.ContainsAny(line, "\r\n") {
				return // only compare a plain CRLF header with its blank line
			}
			want.WriteString(line + "\r\n")
			if line == "" {
				break
			}
			rest = after
		}
		if hdr != want.String() {
			t.Errorf("header %q rendered as %q", want.String(), hdr)
		}
		Author(fields)
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	f.Add([]byte(short512PEM))
	f.Add([]byte(rfc8463Seed))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		if err != nil {
			return
		}
		if _, err := recordTXT(k.Public()); err != nil {
			t.Errorf("accepted key has no record: %v", err)
		}
	})
}

// FuzzTagLists covers the two tag=value parsers: DKIM-Signature (for the
// report) and key records (TestKey).
func FuzzTagLists(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; d=example.com; s=sel;\r\n b=abc\r\n def; l=3")
	f.Add("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add(";;=;a==b;")
	f.Fuzz(func(t *testing.T, s string) {
		tags := parseSigTags(s)
		if len(tags.bPrefix()) > 8 {
			t.Errorf("header.b longer than 8: %q", tags.bPrefix())
		}
		ar := AuthResults("mx", []Result{{Status: StatusFail, Domain: tags.d, Selector: tags.s, Algorithm: tags.a, Identifier: tags.i, BPrefix: tags.bPrefix()}})
		if strings.ContainsAny(ar, "\r\n") || strings.Count(ar, "dkim=") != 1 {
			t.Errorf("A-R from %q: %q", s, ar)
		}
		if m, err := parseKeyRecord(s); err == nil {
			for k := range m {
				if k == "" || strings.Contains(k, "=") {
					t.Errorf("bad tag name %q", k)
				}
			}
		}
	})
}
