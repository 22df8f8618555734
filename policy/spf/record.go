package spf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A record is an SPF record that passed the syntax check of RFC 7208
// section 12. The library that evaluates records (blitiri.com.ar/go/spf)
// checks syntax only as far as evaluation gets, so a record with an error
// after the term that matches would not be a permerror there; checking the
// whole record first is what makes the result RFC-exact.
type record struct {
	terms    []term // mechanisms, in order
	redirect string // domain-spec of redirect=, "" when absent
	exp      string // domain-spec of exp=, "" when absent
}

// A term is one mechanism of a record.
type term struct {
	qualifier byte   // '+', '-', '~' or '?'
	name      string // lower case: all include a mx ptr ip4 ip6 exists
	target    string // domain-spec (include a mx ptr exists), "" for the default
	prefix    netip.Prefix
	cidr4     int // a and mx: -1 when not given
	cidr6     int
}

// isSPFRecord reports whether a TXT string is an SPF version 1 record:
// "v=spf1" followed by a space or nothing (RFC 7208 section 4.5).
func isSPFRecord(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

// parseRecord checks a whole SPF record against the ABNF of RFC 7208
// section 12 and returns its terms. Any error is a permerror.
func parseRecord(txt string) (*record, error) {
	if !isSPFRecord(txt) {
		return nil, fmt.Errorf("not an SPF record")
	}
	for i := 0; i < len(txt); i++ {
		// Only SP and the visible 7-bit characters are legal anywhere in a
		// record (macro-literal and SP); this also rules out tabs, CR, LF
		// and every non-ASCII byte (section 3.1).
		if c := txt[i]; c < 0x20 || c > 0x7e {
			return nil, fmt.Errorf("invalid character %q at offset %d", c, i)
		}
	}
	rec := &record{}
	var seenRedirect, seenExp bool
	for _, t := range strings.Split(txt[6:], " ") {
		if t == "" {
			continue // 1*SP between terms, and trailing spaces
		}
		if name, value, ok := modifierTerm(t); ok {
			switch strings.ToLower(name) {
			case "redirect":
				if seenRedirect {
					return nil, fmt.Errorf("more than one redirect=")
				}
				seenRedirect = true
				if err := checkDomainSpec(value, false); err != nil {
					return nil, fmt.Errorf("redirect=%s: %w", value, err)
				}
				rec.redirect = value
			case "exp":
				if seenExp {
					return nil, fmt.Errorf("more than one exp=")
				}
				seenExp = true
				if err := checkDomainSpec(value, false); err != nil {
					return nil, fmt.Errorf("exp=%s: %w", value, err)
				}
				rec.exp = value
			default:
				// Unknown modifiers are ignored, but their value must
				// still be a macro-string.
				if err := checkMacroString(value, false, true); err != nil {
					return nil, fmt.Errorf("%s=: %w", name, err)
				}
			}
			continue
		}
		m, err := parseMechanism(t)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", t, err)
		}
		rec.terms = append(rec.terms, m)
	}
	return rec, nil
}

// modifierTerm splits a modifier term into its name and value. A term is a
// modifier when it starts with a name followed by "=":
//
//	name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
func modifierTerm(t string) (name, value string, ok bool) {
	i := strings.IndexByte(t, '=')
	if i <= 0 || !isAlpha(t[0]) {
		return "", "", false
	}
	for j := 1; j < i; j++ {
		c := t[j]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return "", "", false
		}
	}
	return t[:i], t[i+1:], true
}

func parseMechanism(t string) (term, error) {
	m := term{qualifier: '+', cidr4: -1, cidr6: -1}
	switch t[0] {
	case '+', '-', '~', '?':
		m.qualifier = t[0]
		t = t[1:]
	}
	// The name ends at the first ":" or "/".
	end := strings.IndexAny(t, ":/")
	if end < 0 {
		end = len(t)
	}
	m.name = strings.ToLower(t[:end])
	rest := t[end:]
	switch m.name {
	case "all":
		if rest != "" {
			return m, fmt.Errorf("all takes no argument")
		}
	case "include", "exists":
		if !strings.HasPrefix(rest, ":") {
			return m, fmt.Errorf("%s needs a domain", m.name)
		}
		m.target = rest[1:]
		if err := checkDomainSpec(m.target, false); err != nil {
			return m, err
		}
	case "ptr":
		if rest == "" {
			break
		}
		if !strings.HasPrefix(rest, ":") {
			return m, fmt.Errorf("ptr takes no CIDR length")
		}
		m.target = rest[1:]
		if err := checkDomainSpec(m.target, false); err != nil {
			return m, err
		}
	case "a", "mx":
		// A domain-spec may itself contain "/" (macro-literal), so the
		// dual-cidr-length is whatever CIDR suffix the term ends with.
		spec, c4, c6, err := splitDualCIDR(rest)
		if err != nil {
			return m, err
		}
		m.cidr4, m.cidr6 = c4, c6
		if spec != "" {
			if !strings.HasPrefix(spec, ":") {
				return m, fmt.Errorf("invalid %s argument", m.name)
			}
			m.target = spec[1:]
			if err := checkDomainSpec(m.target, false); err != nil {
				return m, err
			}
		}
	case "ip4", "ip6":
		if !strings.HasPrefix(rest, ":") {
			return m, fmt.Errorf("%s needs an address", m.name)
		}
		p, err := parseNetwork(m.name, rest[1:])
		if err != nil {
			return m, err
		}
		m.prefix = p
	default:
		return m, fmt.Errorf("unknown mechanism")
	}
	return m, nil
}

// splitDualCIDR takes the dual-cidr-length off the end of the argument of
// "a" or "mx":
//
//	dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
func splitDualCIDR(s string) (spec string, c4, c6 int, err error) {
	c4, c6 = -1, -1
	// The IPv6 length: "//" followed by digits at the very end.
	if i := strings.LastIndex(s, "//"); i >= 0 && allDigits(s[i+2:]) {
		if c6, err = cidrLength(s[i+2:], 128); err != nil {
			return "", 0, 0, err
		}
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 && allDigits(s[i+1:]) {
		if c4, err = cidrLength(s[i+1:], 32); err != nil {
			return "", 0, 0, err
		}
		s = s[:i]
	}
	return s, c4, c6, nil
}

// cidrLength parses "0" / %x31-39 *DIGIT up to max: no leading zeros.
func cidrLength(s string, max int) (int, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || len(s) > 3 {
		return 0, fmt.Errorf("invalid CIDR length %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, fmt.Errorf("invalid CIDR length %q", s)
	}
	return n, nil
}

// parseNetwork parses the argument of ip4: or ip6:, with its optional
// CIDR length.
func parseNetwork(mech, s string) (netip.Prefix, error) {
	addr, length, hasLength := strings.Cut(s, "/")
	bits := 32
	if mech == "ip6" {
		bits = 128
	}
	n := bits
	if hasLength {
		var err error
		if n, err = cidrLength(length, bits); err != nil {
			return netip.Prefix{}, err
		}
	}
	var ip netip.Addr
	if mech == "ip4" {
		if !validIP4(addr) {
			return netip.Prefix{}, fmt.Errorf("invalid IPv4 address %q", addr)
		}
		ip = netip.MustParseAddr(addr)
	} else {
		a, err := netip.ParseAddr(addr)
		// RFC 4291 text form: no zone, and an IPv6 address (an embedded
		// IPv4 tail like ::ffff:1.2.3.4 is still IPv6).
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid IPv6 address %q", addr)
		}
		ip = a
	}
	return netip.PrefixFrom(ip, n).Masked(), nil
}

// validIP4 checks ip4-network: four qnum (0-255, no leading zeros).
func validIP4(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || !allDigits(p) || (len(p) > 1 && p[0] == '0') {
			return false
		}
		if n, _ := strconv.Atoi(p); n > 255 {
			return false
		}
	}
	return true
}

// checkDomainSpec checks a domain-spec:
//
//	domain-spec = macro-string domain-end
//	domain-end  = ( "." toplabel [ "." ] ) / macro-expand
//	toplabel    = ( *alphanum ALPHA *alphanum ) /
//	              ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
//
// exp reports whether the macro letters c, r and t are allowed (only in
// explanation text, never in a domain-spec).
func checkDomainSpec(s string, exp bool) error {
	if s == "" {
		return fmt.Errorf("empty domain-spec")
	}
	if err := checkMacroString(s, false, exp); err != nil {
		return err
	}
	if endsWithMacroExpand(s) {
		return nil
	}
	t := strings.TrimSuffix(s, ".")
	i := strings.LastIndexByte(t, '.')
	if i < 0 {
		return fmt.Errorf("domain-spec %q needs a top-level label", s)
	}
	if !validTopLabel(t[i+1:]) {
		return fmt.Errorf("invalid top-level label %q", t[i+1:])
	}
	return nil
}

// endsWithMacroExpand reports whether a syntactically valid macro-string
// ends with a macro-expand ("%{...}", "%%", "%_" or "%-").
func endsWithMacroExpand(s string) bool {
	if strings.HasSuffix(s, "}") {
		// The "}" closes a macro unless it is a literal; a literal "}" is
		// never preceded by an unclosed "%{" in a valid string.
		if i := strings.LastIndex(s, "%{"); i >= 0 && !strings.Contains(s[i:len(s)-1], "}") {
			return precededByEvenPercents(s, i)
		}
		return false
	}
	if n := len(s); n >= 2 && s[n-2] == '%' && (s[n-1] == '%' || s[n-1] == '_' || s[n-1] == '-') {
		return precededByEvenPercents(s, n-2)
	}
	return false
}

// precededByEvenPercents reports whether the "%" at s[i] starts an
// expansion, that is, is not itself the second half of a "%%".
func precededByEvenPercents(s string, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && s[j] == '%'; j-- {
		n++
	}
	return n%2 == 0
}

func validTopLabel(l string) bool {
	if l == "" {
		return false
	}
	for i := 0; i < len(l); i++ {
		if !isAlpha(l[i]) && !isDigit(l[i]) && l[i] != '-' {
			return false
		}
	}
	if !strings.Contains(l, "-") {
		// *alphanum ALPHA *alphanum: not all digits.
		return !allDigits(l)
	}
	// 1*alphanum "-" *( alphanum / "-" ) alphanum
	return l[0] != '-' && l[len(l)-1] != '-'
}

// checkMacroString checks a macro-string, or an explain-string when spaces
// is set; expLetters allows the letters c, r and t.
func checkMacroString(s string, spaces, expLetters bool) error {
	_, err := expandMacros(s, spaces, expLetters, nil)
	return err
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
