package greylist

import (
	"net/netip"
	"strings"
)

// NormalizeSender maps an envelope sender to the form used in triplet keys, so that
// the per-message variations bulk senders put into their return paths do not make
// every message a new triplet. In order:
//
//   - lower-case; "" (the null sender) stays "", an address without '@' stays as is;
//   - SRS0 (SRS0=hash=tt=orig-domain=orig-local@forwarder) and SRS1 chains are undone:
//     the result is orig-local@orig-domain;
//   - BATV: prvs=tagval=local and msprvs1=tagval=local become local (postgrey's rule to
//     pick which side is the tag), btv1==tag==local becomes local;
//   - a +extension is stripped (list-bounces+user=example.com@ → list-bounces@);
//   - in the local part, tokens (runs of [a-z0-9]) made of digits only become '#'
//     (postgrey), and so do runs of hexadecimal tokens joined by '-' that hold 8 or more
//     hex digits including at least one decimal digit (message ids, UUIDs: Amazon SES
//     0100018c...-000000@amazonses.com becomes #@amazonses.com).
//
// The domain is left alone, like postgrey does.
func NormalizeSender(sender string) string {
	s := strings.ToLower(sender)
	// An SRS1 address wraps an SRS0 one; a forwarder of a forwarder may wrap again.
	// Bounded so that a crafted address cannot make us loop.
	for range 4 {
		d, ok := decodeSRS(s)
		if !ok {
			break
		}
		s = d
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	local, domain := s[:at], s[at+1:]
	local = stripBATV(local)
	if i := strings.IndexByte(local, '+'); i >= 0 {
		local = local[:i]
	}
	return replaceVariableTokens(local) + "@" + domain
}

// decodeSRS undoes one level of Sender Rewriting Scheme. s is lower-case.
//
//	SRS0=HHH=TT=orig-domain=orig-local@forwarder
//	SRS1=HHH=first-forwarder==HHH=TT=orig-domain=orig-local@second-forwarder
//
// The separator after SRS0/SRS1 may be '=', '+' or '-' (libsrs2 accepts all three).
func decodeSRS(s string) (string, bool) {
	at := strings.LastIndexByte(s, '@')
	if at < 5 {
		return "", false
	}
	local := s[:at]
	srs1 := false
	switch local[:4] {
	case "srs0":
	case "srs1":
		srs1 = true
	default:
		return "", false
	}
	if !isSRSSeparator(local[4]) {
		return "", false
	}
	rest := local[5:]
	if srs1 {
		// hash=first-forwarder=<separator of the wrapped SRS0>hash=tt=domain=local
		parts := strings.SplitN(rest, "=", 3)
		if len(parts) != 3 || parts[2] == "" || !isSRSSeparator(parts[2][0]) {
			return "", false
		}
		rest = parts[2][1:]
	}
	parts := strings.SplitN(rest, "=", 4)
	if len(parts) != 4 || parts[2] == "" || parts[3] == "" {
		return "", false
	}
	return parts[3] + "@" + parts[2], true
}

func isSRSSeparator(c byte) bool { return c == '=' || c == '+' || c == '-' }

// stripBATV returns the local part without a BATV tag. local is lower-case.
func stripBATV(local string) string {
	switch {
	case strings.HasPrefix(local, "prvs="), strings.HasPrefix(local, "msprvs1="):
		// BATV is defined as prvs=tag-val=loc-core, but sometimes shows up as
		// prvs=loc-core=tag-val; postgrey's rule: the tag is the side that starts with
		// 10 alphanumerics, the standard order when both or neither do.
		a := strings.Split(local, "=")
		if len(a) != 3 {
			return local
		}
		if looksLikeBATVTag(a[2]) && !looksLikeBATVTag(a[1]) && a[1] != "" {
			return a[1]
		}
		if a[2] != "" {
			return a[2]
		}
	case strings.HasPrefix(local, "btv1=="):
		// Barracuda: btv1==tag==loc-core
		rest := local[len("btv1=="):]
		if i := strings.Index(rest, "=="); i >= 0 && i+2 < len(rest) {
			return rest[i+2:]
		}
	}
	return local
}

func looksLikeBATVTag(s string) bool {
	if len(s) < 10 {
		return false
	}
	for i := range 10 {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
func isHex(c byte) bool   { return c >= 'a' && c <= 'f' || c >= '0' && c <= '9' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// replaceVariableTokens replaces digit-only tokens and long hexadecimal runs by '#'.
// local is lower-case. Tokens are maximal runs of [a-z0-9].
func replaceVariableTokens(local string) string {
	var out strings.Builder
	n := len(local)
	tokenEnd := func(i int) int {
		for i < n && isAlnum(local[i]) {
			i++
		}
		return i
	}
	for i := 0; i < n; {
		if !isAlnum(local[i]) {
			out.WriteByte(local[i])
			i++
			continue
		}
		// The longest run of hex tokens joined by single '-' starting here.
		hexDigits, hasDigit, runEnd := 0, false, i
		for j := i; ; {
			e := tokenEnd(j)
			tok := local[j:e]
			if !allOf(tok, isHex) {
				break
			}
			hexDigits += len(tok)
			hasDigit = hasDigit || strings.IndexFunc(tok, func(r rune) bool { return r >= '0' && r <= '9' }) >= 0
			runEnd = e
			if e+1 < n && local[e] == '-' && isAlnum(local[e+1]) {
				j = e + 1
				continue
			}
			break
		}
		if hexDigits >= 8 && hasDigit {
			out.WriteByte('#')
			i = runEnd
			continue
		}
		e := tokenEnd(i)
		if allOf(local[i:e], isDigit) {
			out.WriteByte('#')
		} else {
			out.WriteString(local[i:e])
		}
		i = e
	}
	return out.String()
}

func allOf(s string, f func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !f(s[i]) {
			return false
		}
	}
	return s != ""
}

// clientNetwork is the client part of the triplet key: the address masked to the
// configured prefix length, without the length ("192.0.2.0", like postgrey).
func clientNetwork(ip netip.Addr, v4Bits, v6Bits int) string {
	ip = ip.Unmap().WithZone("")
	bits := v6Bits
	if ip.Is4() {
		bits = v4Bits
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip.String()
	}
	return p.Addr().String()
}
