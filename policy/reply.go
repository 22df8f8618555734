package policy

import (
	"strings"
	"unicode/utf8"
)

// MaxReplyLength bounds the action text sent back. Postfix reads policy
// replies with its line_length_limit (2048 by default); longer text would
// be cut there anyway.
const MaxReplyLength = 2000

// sanitizeReply makes s safe to send as the value of "action=": valid UTF-8
// (invalid bytes become U+FFFD), no control characters (CR and LF would end
// the reply early or inject attributes; they become spaces), no leading or
// trailing blanks, at most MaxReplyLength bytes cut on a rune boundary.
func sanitizeReply(s string) string {
	if isCleanReply(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), MaxReplyLength))
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			// Either invalid bytes or a real U+FFFD: both are written as U+FFFD.
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029:
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > MaxReplyLength {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// isCleanReply is the fast path: printable ASCII, no blanks at either end.
func isCleanReply(s string) bool {
	if s == "" {
		return true
	}
	if len(s) > MaxReplyLength || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// validHeaderName reports whether name is an RFC 5322 field name: printable
// ASCII without ':' or space.
func validHeaderName(name string) bool {
	if name == "" || len(name) > 100 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// hasSMTPCode reports whether s starts with a 3-digit SMTP code whose first
// digit is class ('4' or '5') followed by a space or the end.
func hasSMTPCode(s string, class byte) bool {
	if len(s) < 3 || s[0] != class || !isDigit(s[1]) || !isDigit(s[2]) {
		return false
	}
	return len(s) == 3 || s[3] == ' '
}

// hasEnhancedCode reports whether s starts with an RFC 3463 status code
// "c.sss.ddd" of the given class.
func hasEnhancedCode(s string, class byte) bool {
	if len(s) < 5 || s[0] != class || s[1] != '.' {
		return false
	}
	i := 2
	n := 0
	for i < len(s) && isDigit(s[i]) && n < 3 {
		i++
		n++
	}
	if n == 0 || i >= len(s) || s[i] != '.' {
		return false
	}
	i++
	n = 0
	for i < len(s) && isDigit(s[i]) && n < 3 {
		i++
		n++
	}
	return n > 0 && (i == len(s) || s[i] == ' ')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// actionVerb returns the fixed verb of an action for metric labels:
// "REJECT" for 5xx replies, "DEFER" for 4xx, otherwise the first word.
func actionVerb(action string) string {
	switch {
	case hasSMTPCode(action, '5'):
		return "REJECT"
	case hasSMTPCode(action, '4'):
		return "DEFER"
	}
	verb, _, _ := strings.Cut(action, " ")
	switch verb := strings.ToUpper(verb); verb {
	case "DUNNO", "PREPEND", "DEFER_IF_PERMIT", "REJECT", "DEFER", "OK":
		return verb
	}
	return "OTHER"
}
