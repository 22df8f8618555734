package rbl

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Target is what a list is queried for: the client IP address, or one or
// more of the domain names of a transaction (RHSBL). It is a bit set so that
// one domain list can be applied to several names.
type Target uint8

const (
	TargetIP         Target = 1 << iota // client IP address (DNSBL/DNSWL)
	TargetSender                        // envelope sender domain (RHSBL)
	TargetHelo                          // HELO/EHLO name (RHSBL)
	TargetClientName                    // verified client hostname (RHSBL)

	// TargetDomain is every domain target at once, written "domain:".
	TargetDomain = TargetSender | TargetHelo | TargetClientName
)

var targetNames = []struct {
	t    Target
	name string
}{
	{TargetIP, "ip"},
	{TargetSender, "sender"},
	{TargetHelo, "helo"},
	{TargetClientName, "client_name"},
}

// String gives the targets as written in a list entry, e.g. "sender,helo".
func (t Target) String() string {
	var names []string
	for _, tn := range targetNames {
		if t&tn.t != 0 {
			names = append(names, tn.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

func parseTargets(s string) (Target, error) {
	var t Target
	for name := range strings.SplitSeq(s, ",") {
		switch name {
		case "ip":
			t |= TargetIP
		case "sender":
			t |= TargetSender
		case "helo":
			t |= TargetHelo
		case "client_name":
			t |= TargetClientName
		case "domain":
			t |= TargetDomain
		default:
			return 0, fmt.Errorf("unknown target %q (want ip, sender, helo, client_name or domain)", name)
		}
	}
	if t&TargetIP != 0 && t&TargetDomain != 0 {
		// An IP list answers 127.0.1.255-style errors or nothing for a name,
		// and a domain list the reverse: one entry cannot be both.
		return 0, fmt.Errorf("targets %q mix the client IP with domain names", s)
	}
	return t, nil
}

// octetSet is the set of values one octet of a filter accepts, as a
// 256-bit bitmap so that matching is four word tests.
type octetSet [4]uint64

func (o *octetSet) addRange(lo, hi int) {
	for v := lo; v <= hi; v++ {
		o[v>>6] |= 1 << (v & 63)
	}
}

func (o *octetSet) has(v uint8) bool { return o[v>>6]&(1<<(v&63)) != 0 }

// String writes the set in postscreen notation, merging runs into ranges:
// a single value bare, anything else in brackets.
func (o *octetSet) String() string {
	var parts []string
	for v := 0; v < 256; {
		if !o.has(uint8(v)) {
			v++
			continue
		}
		lo := v
		for v < 256 && o.has(uint8(v)) {
			v++
		}
		if hi := v - 1; hi == lo {
			parts = append(parts, strconv.Itoa(lo))
		} else {
			parts = append(parts, strconv.Itoa(lo)+".."+strconv.Itoa(hi))
		}
	}
	if len(parts) == 1 && !strings.Contains(parts[0], "..") {
		return parts[0]
	}
	return "[" + strings.Join(parts, ";") + "]"
}

func (o *octetSet) count() int {
	return bits.OnesCount64(o[0]) + bits.OnesCount64(o[1]) + bits.OnesCount64(o[2]) + bits.OnesCount64(o[3])
}

// Filter restricts which A records of a list count as a listing, in
// Postfix's notation: four octets, each a number or a bracketed
// `;`-separated list of numbers and `a..b` ranges (127.0.0.[2..11],
// 127.0.[0..255].[1;2;3]). The zero Filter accepts every answer in
// 127.0.0.0/8. Either way the error answers of errors.go never count.
type Filter struct {
	set    bool
	octets [4]octetSet
}

// IsZero reports whether the filter is absent (any 127.0.0.0/8 answer).
func (f Filter) IsZero() bool { return !f.set }

// Match reports whether addr passes the filter. It does not know about
// error codes; classify does.
func (f Filter) Match(addr netip.Addr) bool {
	if !addr.Is4() {
		return false
	}
	a := addr.As4()
	if !f.set {
		return a[0] == 127
	}
	for i := range a {
		if !f.octets[i].has(a[i]) {
			return false
		}
	}
	return true
}

// String is the filter in canonical postscreen notation ("" when absent).
func (f Filter) String() string {
	if !f.set {
		return ""
	}
	parts := make([]string, 4)
	for i := range f.octets {
		parts[i] = f.octets[i].String()
	}
	return strings.Join(parts, ".")
}

func parseFilter(s string) (Filter, error) {
	f := Filter{set: true}
	// Split on dots outside brackets: ".." inside brackets is a range.
	var fields []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				fields = append(fields, s[start:i])
				start = i + 1
			}
		}
	}
	fields = append(fields, s[start:])
	if len(fields) != 4 {
		return Filter{}, fmt.Errorf("want four octets, got %d", len(fields))
	}
	for i, field := range fields {
		if err := parseOctet(&f.octets[i], field); err != nil {
			return Filter{}, fmt.Errorf("octet %d %q: %v", i+1, field, err)
		}
	}
	return f, nil
}

func parseOctet(o *octetSet, s string) error {
	if !strings.HasPrefix(s, "[") {
		v, err := parseOctetValue(s)
		if err != nil {
			return err
		}
		o.addRange(v, v)
		return nil
	}
	if !strings.HasSuffix(s, "]") || len(s) < 2 {
		return fmt.Errorf("missing ]")
	}
	inner := s[1 : len(s)-1]
	if inner == "" {
		return fmt.Errorf("empty []")
	}
	for item := range strings.SplitSeq(inner, ";") {
		lo, hi, isRange := strings.Cut(item, "..")
		a, err := parseOctetValue(lo)
		if err != nil {
			return err
		}
		b := a
		if isRange {
			if b, err = parseOctetValue(hi); err != nil {
				return err
			}
			if b < a {
				return fmt.Errorf("range %s is backwards", item)
			}
		}
		o.addRange(a, b)
	}
	return nil
}

func parseOctetValue(s string) (int, error) {
	if s == "" || len(s) > 3 {
		return 0, fmt.Errorf("bad value %q (want 0 to 255)", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad value %q (want 0 to 255)", s)
		}
	}
	v, _ := strconv.Atoi(s)
	if v > 255 {
		return 0, fmt.Errorf("value %d above 255", v)
	}
	return v, nil
}

// MaxWeight bounds |weight| so that no sum of weights can overflow and a
// typo like *30000000 is caught.
const MaxWeight = 10000

// maxZoneLen leaves room under the 253-character name limit for the 64
// characters of an IPv6 query ("32 nibbles" and their dots).
const maxZoneLen = 253 - 64

// List is one configured list entry.
type List struct {
	Targets Target // TargetIP, or some of TargetDomain
	Zone    string // as configured, lower case, no trailing dot (never holds a DQS key)
	Filter  Filter // which answers count; zero: any 127.0.0.0/8 answer
	Weight  int    // added to the score when listed; negative allowlists
}

// String is the entry in the canonical form ParseList reads back.
func (l List) String() string {
	var b strings.Builder
	if l.Targets != TargetIP {
		if l.Targets == TargetDomain {
			b.WriteString("domain")
		} else {
			b.WriteString(l.Targets.String())
		}
		b.WriteByte(':')
	}
	b.WriteString(l.Zone)
	if l.Filter.set {
		b.WriteByte('=')
		b.WriteString(l.Filter.String())
	}
	if l.Weight != 1 {
		b.WriteByte('*')
		b.WriteString(strconv.Itoa(l.Weight))
	}
	return b.String()
}

// ParseList reads one list entry in postscreen's notation,
//
//	[targets:]zone[=filter][*weight]
//
// e.g. "zen.spamhaus.org=127.0.0.[2..11]*3", "bl.spamcop.net*2",
// "list.dnswl.org=127.0.[0..255].[1..3]*-5",
// "sender,helo:dbl.spamhaus.org=127.0.1.[2..99]*3".
//
// targets is a comma-separated set of ip (the default), sender, helo,
// client_name, or domain (all three names); ":" cannot occur in a zone, so
// the prefix extends postscreen's notation without ambiguity. The weight
// defaults to 1. Errors quote the entry.
func ParseList(entry string) (List, error) {
	l, err := parseList(strings.TrimSpace(entry))
	if err != nil {
		return List{}, fmt.Errorf("%q: %w", entry, err)
	}
	return l, nil
}

func parseList(s string) (List, error) {
	l := List{Targets: TargetIP, Weight: 1}
	if s == "" {
		return l, fmt.Errorf("empty list entry")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return l, fmt.Errorf("white space inside the entry")
	}
	if prefix, rest, ok := strings.Cut(s, ":"); ok {
		t, err := parseTargets(prefix)
		if err != nil {
			return l, err
		}
		l.Targets, s = t, rest
	}
	if i := strings.LastIndexByte(s, '*'); i >= 0 {
		w, err := strconv.Atoi(s[i+1:])
		if err != nil || s[i+1:] == "" || s[i+1] == '+' {
			return l, fmt.Errorf("bad weight %q (want an integer such as *3 or *-5)", s[i+1:])
		}
		if w > MaxWeight || w < -MaxWeight {
			return l, fmt.Errorf("weight %d out of range ±%d", w, MaxWeight)
		}
		l.Weight, s = w, s[:i]
	}
	zone, filter, hasFilter := strings.Cut(s, "=")
	if hasFilter {
		f, err := parseFilter(filter)
		if err != nil {
			return l, fmt.Errorf("bad filter %q: %v", filter, err)
		}
		l.Filter = f
	}
	zone = strings.ToLower(strings.TrimSuffix(zone, "."))
	if err := checkZone(zone); err != nil {
		return l, err
	}
	l.Zone = zone
	return l, nil
}

// checkZone accepts host-name syntax (plus "_", used by some private
// zones); anything else could not be queried and is a configuration typo.
func checkZone(zone string) error {
	if zone == "" {
		return fmt.Errorf("missing zone")
	}
	if len(zone) > maxZoneLen {
		return fmt.Errorf("zone longer than %d characters", maxZoneLen)
	}
	for label := range strings.SplitSeq(zone, ".") {
		if label == "" {
			return fmt.Errorf("bad zone %q: empty label", zone)
		}
		if len(label) > 63 {
			return fmt.Errorf("bad zone %q: label longer than 63 characters", zone)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("bad zone %q: character %q", zone, c)
			}
		}
	}
	return nil
}

// ParseLists parses every entry; the error names the first bad one.
func ParseLists(entries []string) ([]List, error) {
	lists := make([]List, 0, len(entries))
	for _, e := range entries {
		l, err := ParseList(e)
		if err != nil {
			return nil, err
		}
		lists = append(lists, l)
	}
	return lists, nil
}
