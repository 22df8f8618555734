package dkim

import (
	"strings"
)

// AuthResults returns the value of an Authentication-Results header field
// (RFC 8601) for the DKIM results of a message, on one line and without a
// line break: "authserv-id; dkim=pass header.d=example.com header.s=sel
// header.a=rsa-sha256 header.b=abcdefgh", one "; dkim=..." per result, a
// reason="..." after a result that is not pass, and "authserv-id; dkim=none"
// for an unsigned message. Values come from the message, so anything but
// plain token characters is quoted and control characters are dropped: a
// forged signature cannot inject results of its own.
func AuthResults(authservID string, results []Result) string {
	var b strings.Builder
	b.WriteString(authservID)
	if len(results) == 0 {
		b.WriteString("; dkim=none")
		return b.String()
	}
	for _, r := range results {
		b.WriteString("; dkim=")
		b.WriteString(string(r.Status))
		if r.Status != StatusPass && r.Err != nil {
			b.WriteString(" reason=")
			b.WriteString(quoteString(strings.TrimPrefix(r.Err.Error(), "dkim: ")))
		}
		prop := func(name, value string) {
			if value != "" {
				b.WriteString(" header.")
				b.WriteString(name)
				b.WriteByte('=')
				b.WriteString(pvalue(value))
			}
		}
		prop("d", r.Domain)
		prop("i", r.Identifier)
		prop("s", r.Selector)
		prop("a", r.Algorithm)
		prop("b", r.BPrefix)
	}
	return b.String()
}

// pvalue writes a property value bare when it is made of characters safe in
// every reader (letters, digits and "-._+/=@"; base64 and addresses fit), and
// as a quoted-string otherwise.
func pvalue(v string) string {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._+/=@", c) >= 0) {
			return quoteString(v)
		}
	}
	return v
}

// quoteString makes an RFC 5322 quoted-string: '"' and '\' escaped, control
// characters (CR and LF included) dropped.
func quoteString(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' && c != '\t' || c == 0x7f:
			// dropped
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// HasAuthServID reports whether an Authentication-Results header value
// carries authservID, compared case-insensitively. Comments and folding
// whitespace before the authserv-id are skipped, and a quoted-string id is
// unquoted; go-msgauth's authres.Parse fails on comments, hence this parser.
func HasAuthServID(value, authservID string) bool {
	id, ok := authServID(value)
	return ok && strings.EqualFold(id, authservID)
}

// authServID extracts the authserv-id of an Authentication-Results value.
func authServID(s string) (string, bool) {
	i := skipCFWS(s, 0)
	if i >= len(s) {
		return "", false
	}
	if s[i] == '"' {
		var b strings.Builder
		for i++; i < len(s); i++ {
			switch c := s[i]; c {
			case '\\':
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			case '"':
				return b.String(), b.Len() > 0
			case '\r', '\n':
				// folding inside a quoted-string: not part of the value
			default:
				b.WriteByte(c)
			}
		}
		return "", false // unterminated
	}
	j := i
	for j < len(s) && !strings.ContainsRune(" \t\r\n;(\"", rune(s[j])) {
		j++
	}
	return s[i:j], j > i
}

// skipCFWS skips whitespace and (nested, escapable) comments from s[i].
func skipCFWS(s string, i int) int {
	depth := 0
	for i < len(s) {
		c := s[i]
		switch {
		case depth > 0 && c == '\\':
			i++
		case c == '(':
			depth++
		case depth > 0 && c == ')':
			depth--
		case depth > 0, c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			return i
		}
		i++
	}
	return i
}
