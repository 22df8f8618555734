package rbl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Query is what one transaction offers to the lists. Empty fields (and an
// invalid ClientIP) are simply not queried.
type Query struct {
	ClientIP     netip.Addr
	SenderDomain string // domain of the envelope sender; "" for the null sender
	Helo         string // HELO/EHLO argument as given
	ClientName   string // verified client name; Postfix's "unknown" is ignored
}

// ParseQuery makes the query of `postgate rbl check ARG`: an IP address is
// the client address, anything else a domain checked as sender, HELO and
// client name at once, so every domain list answers for it.
func ParseQuery(arg string) (Query, error) {
	arg = strings.TrimSpace(arg)
	if ip, err := netip.ParseAddr(arg); err == nil {
		if ip.Zone() != "" {
			return Query{}, fmt.Errorf("%q: IPv6 zone not allowed", arg)
		}
		return Query{ClientIP: ip.Unmap()}, nil
	}
	d, ok := normalizeDomain(arg)
	if !ok {
		return Query{}, fmt.Errorf("%q is neither an IP address nor a domain name", arg)
	}
	return Query{SenderDomain: d, Helo: d, ClientName: d}, nil
}

// reverseIP writes addr as DNSBLs expect it: IPv4 reversed octets, IPv6 the
// 32 nibbles of the full address reversed (RFC 5782).
func reverseIP(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is4() {
		a := addr.As4()
		return strconv.Itoa(int(a[3])) + "." + strconv.Itoa(int(a[2])) + "." +
			strconv.Itoa(int(a[1])) + "." + strconv.Itoa(int(a[0]))
	}
	const hex = "0123456789abcdef"
	a := addr.As16()
	b := make([]byte, 0, 63)
	for i := len(a) - 1; i >= 0; i-- {
		if len(b) > 0 {
			b = append(b, '.')
		}
		b = append(b, hex[a[i]&0xf], '.', hex[a[i]>>4])
	}
	return string(b)
}

// normalizeDomain lower-cases name and drops a trailing dot; ok is false
// for what no domain list can answer: empty, Postfix's "unknown", address
// literals and bare IPs, single labels (localhost), non-ASCII names (the
// lists want A-labels) and anything that is not host-name syntax.
func normalizeDomain(name string) (string, bool) {
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if name == "" || name == "unknown" || len(name) > 253 {
		return "", false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "", false
	}
	labels := 0
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
		labels++
	}
	if labels < 2 {
		return "", false
	}
	return name, true
}

// subjects gives, per single target, the text queried and shown.
type subject struct {
	target Target
	text   string // IP address or domain, as shown
	prefix string // what goes before the zone
}

func (q Query) subjects() []subject {
	var out []subject
	if q.ClientIP.IsValid() {
		ip := q.ClientIP.Unmap().WithZone("")
		out = append(out, subject{TargetIP, ip.String(), reverseIP(ip)})
	}
	for _, d := range []struct {
		t    Target
		name string
	}{{TargetSender, q.SenderDomain}, {TargetHelo, q.Helo}, {TargetClientName, q.ClientName}} {
		if n, ok := normalizeDomain(d.name); ok {
			out = append(out, subject{d.t, n, n})
		}
	}
	return out
}
