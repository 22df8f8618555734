package spf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// macroEnv holds what the macro letters of RFC 7208 section 7.3 expand to.
type macroEnv struct {
	sender string // s: <sender>, local-part "postmaster" when it was empty
	local  string // l
	domain string // o: the domain of <sender>
	helo   string // h
	ip     netip.Addr
	// cur is <domain> (d): the domain whose record is being evaluated.
	cur string
	// receiver is r, for explanations.
	receiver string
	now      time.Time
	// ptr returns the validated domain name of ip (p). It does DNS
	// lookups, so it is only called when a record uses %{p}.
	ptr func(domain string) string
}

// expandMacros checks a macro-string (or an explain-string when spaces is
// set, RFC 7208 section 12) and, when env is not nil, expands it. The
// letters c, r and t are allowed only when expLetters is set: in
// explanation text (section 7.3).
//
//	macro-string = *( macro-expand / macro-literal )
//	macro-expand = ( "%{" macro-letter transformers *delimiter "}" )
//	               / "%%" / "%_" / "%-"
//	macro-literal = %x21-24 / %x26-7E
func expandMacros(s string, spaces, expLetters bool, env *macroEnv) (string, error) {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x21 || c > 0x7e {
				if !(spaces && c == ' ') {
					return "", fmt.Errorf("invalid character %q in macro-string", c)
				}
			}
			out.WriteByte(c)
			continue
		}
		i++
		if i == len(s) {
			return "", fmt.Errorf("%% at the end of %q", s)
		}
		switch s[i] {
		case '%':
			out.WriteByte('%')
		case '_':
			out.WriteByte(' ')
		case '-':
			out.WriteString("%20")
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated macro in %q", s)
			}
			v, err := expandLetter(s[i+1:i+end], expLetters, env)
			if err != nil {
				return "", err
			}
			out.WriteString(v)
			i += end
		default:
			return "", fmt.Errorf("invalid macro %q in %q", s[i-1:i+1], s)
		}
	}
	return out.String(), nil
}

// expandLetter expands the inside of one "%{...}":
//
//	macro-letter transformers *delimiter
//	transformers = *DIGIT [ "r" ]
//	delimiter    = "." / "-" / "+" / "," / "/" / "_" / "="
func expandLetter(m string, expLetters bool, env *macroEnv) (string, error) {
	if m == "" {
		return "", fmt.Errorf("empty macro")
	}
	letter := m[0]
	lower := letter | 0x20
	switch lower {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if !expLetters {
			return "", fmt.Errorf("macro letter %q is allowed only in explanations", letter)
		}
	default:
		return "", fmt.Errorf("invalid macro letter %q", letter)
	}
	rest := m[1:]
	j := 0
	for j < len(rest) && isDigit(rest[j]) {
		j++
	}
	digits := 0 // all parts
	if j > 0 {
		// "If a DIGIT is specified, the value MUST be at least one"; a
		// huge value just means all parts.
		n, err := strconv.Atoi(rest[:j])
		if err != nil {
			n = 1 << 30
		}
		if n == 0 {
			return "", fmt.Errorf("macro %q keeps zero parts", m)
		}
		digits = n
	}
	rest = rest[j:]
	reverse := false
	if rest != "" && (rest[0] == 'r' || rest[0] == 'R') {
		reverse = true
		rest = rest[1:]
	}
	for k := 0; k < len(rest); k++ {
		if !strings.ContainsRune(".-+,/_=", rune(rest[k])) {
			return "", fmt.Errorf("invalid delimiter %q in macro %q", rest[k], m)
		}
	}
	if env == nil {
		return "", nil
	}
	delims := rest
	if delims == "" {
		delims = "."
	}

	v := env.letter(lower)
	if digits > 0 || reverse || delims != "." {
		parts := strings.FieldsFunc(v, func(r rune) bool {
			return strings.ContainsRune(delims, r)
		})
		if reverse {
			for a, b := 0, len(parts)-1; a < b; a, b = a+1, b-1 {
				parts[a], parts[b] = parts[b], parts[a]
			}
		}
		if digits > 0 && digits < len(parts) {
			parts = parts[len(parts)-digits:]
		}
		v = strings.Join(parts, ".")
	}
	if letter != lower {
		v = urlEscape(v)
	}
	return v, nil
}

func (e *macroEnv) letter(l byte) string {
	switch l {
	case 's':
		return e.sender
	case 'l':
		return e.local
	case 'o':
		return e.domain
	case 'd':
		return e.cur
	case 'i':
		return dotIP(e.ip)
	case 'p':
		if e.ptr == nil {
			return "unknown"
		}
		return e.ptr(e.cur)
	case 'h':
		return e.helo
	case 'v':
		if e.ip.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'c':
		return e.ip.String()
	case 'r':
		if e.receiver == "" {
			return "unknown"
		}
		return e.receiver
	case 't':
		return strconv.FormatInt(e.now.Unix(), 10)
	}
	return ""
}

// dotIP is the "i" macro: dotted quad for IPv4, and for IPv6 the 32
// nibbles separated by dots (section 7.3). The nibbles are upper case, as
// in pyspf and the RFC 7208 test suite's expected explanations; DNS does
// not care.
func dotIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789ABCDEF"
	b := ip.As16()
	out := make([]byte, 0, 63)
	for i, x := range b {
		if i > 0 {
			out = append(out, '.')
		}
		out = append(out, hex[x>>4], '.', hex[x&0xf])
	}
	return string(out)
}

// urlEscape escapes everything outside RFC 3986's unreserved set, as
// section 7.3 asks of upper-case macro letters.
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlpha(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// truncateDomain applies section 4.8: a name longer than 253 characters
// loses labels on the left until it fits.
func truncateDomain(name string) string {
	for len(strings.TrimSuffix(name, ".")) > 253 {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return name
		}
		name = name[i+1:]
	}
	return name
}
