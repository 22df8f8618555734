package spf

import (
	"strings"
	"unicode/utf8"
)

// subject is who the result is about, for comments: the sender address
// (postmaster@<helo> for the null sender) or the HELO name.
func (r Result) subject() string {
	if r.Identity == IdentityHelo {
		return r.Helo
	}
	if r.Sender == "" {
		return "postmaster@" + r.Helo
	}
	return r.Sender
}

// Comment is a human-readable sentence about the result, the comment of
// the Received-SPF header (RFC 7208 section 9.1).
func (r Result) Comment() string {
	ip, who := r.ClientIP.Unmap().String(), r.subject()
	switch r.Result {
	case Pass:
		return "domain of " + who + " designates " + ip + " as permitted sender"
	case Fail:
		return "domain of " + who + " does not designate " + ip + " as permitted sender"
	case SoftFail:
		return "domain of transitioning " + who + " does not designate " + ip + " as permitted sender"
	case Neutral:
		return ip + " is neither permitted nor denied by domain of " + who
	case None:
		return "domain of " + who + " does not publish an SPF record"
	case TempError:
		return "temporary error checking " + who + ": " + r.Problem
	case PermError:
		return "permanent error in the SPF record of " + who + ": " + r.Problem
	}
	return "not checked"
}

// ReceivedSPF returns the value of a Received-SPF header field for r
// (RFC 7208 section 9.1), without the field name, on one line:
//
//	pass (mx.example.org: domain of a@example.com designates 192.0.2.1 as
//	permitted sender) client-ip=192.0.2.1; envelope-from="a@example.com";
//	helo=mail.example.com; receiver=mx.example.org; identity=mailfrom;
//
// receiver "" leaves the receiver out (not revealing the host's name).
func (r Result) ReceivedSPF(receiver string) string {
	var b strings.Builder
	b.WriteString(r.Result)
	b.WriteString(" (")
	if receiver != "" {
		b.WriteString(commentText(receiver))
		b.WriteString(": ")
	}
	b.WriteString(commentText(r.Comment()))
	b.WriteString(")")
	kv := func(k, v string) {
		b.WriteString(" ")
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(headerValue(v))
		b.WriteString(";")
	}
	kv("client-ip", r.ClientIP.Unmap().String())
	kv("envelope-from", r.Sender)
	kv("helo", r.Helo)
	if r.Problem != "" && (r.Result == PermError || r.Result == TempError) {
		kv("problem", r.Problem)
	}
	if r.Mechanism != "" && r.Mechanism != "default" {
		kv("mechanism", r.Mechanism)
	}
	if receiver != "" {
		kv("receiver", receiver)
	}
	kv("identity", r.Identity)
	return b.String()
}

// AuthResults returns the resinfo for r in an Authentication-Results
// header field (RFC 8601 section 2.7.2), such as
// "spf=pass smtp.mailfrom=a@example.com" or "spf=none smtp.helo=mail.example.com".
// A HELO result is always labelled smtp.helo, never smtp.mailfrom: taking
// one for the other is what CVE-2019-20790 was about.
func (r Result) AuthResults() string {
	var b strings.Builder
	b.WriteString("spf=")
	b.WriteString(r.Result)
	if r.Result == PermError || r.Result == TempError {
		b.WriteString(" (")
		b.WriteString(commentText(r.Problem))
		b.WriteString(")")
	}
	if r.Identity == IdentityHelo {
		b.WriteString(" smtp.helo=")
		b.WriteString(headerValue(r.Helo))
	} else {
		b.WriteString(" smtp.mailfrom=")
		b.WriteString(headerValue(r.subject()))
	}
	return b.String()
}

// cleanText makes s safe for one header line: valid UTF-8 without control
// characters.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return '?'
		}
		return c
	}, s)
}

// commentText escapes s for use inside a header comment.
func commentText(s string) string {
	s = cleanText(s)
	if !strings.ContainsAny(s, `()\`) {
		return s
	}
	var b strings.Builder
	for _, c := range s {
		if c == '(' || c == ')' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// headerValue returns s as a dot-atom when it is one (RFC 5322 section
// 3.2.3), otherwise as a quoted-string. "@" is allowed too, between a
// local part and a domain, which keeps addresses readable.
func headerValue(s string) string {
	s = cleanText(s)
	if isDotAtom(s) {
		return s
	}
	if i := strings.LastIndexByte(s, '@'); i > 0 && isDotAtom(s[:i]) && isDotAtom(s[i+1:]) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return false
		}
		if !isAlpha(c) && !isDigit(c) && !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", rune(c)) {
			return false
		}
	}
	return true
}
