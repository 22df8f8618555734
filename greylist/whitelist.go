package greylist

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Whitelist holds postgrey's client and recipient whitelists. The zero value and nil
// whitelist nothing but postmaster@ and abuse@ (see [Whitelist.MatchRecipient]).
// A Whitelist is not modified after loading and is safe for concurrent use.
type Whitelist struct {
	clientRegexps []*regexp.Regexp // matched against client_name
	clientDomains []string         // client_name equal to it or a subdomain of it
	clientNets    []netip.Prefix

	recipientRegexps []*regexp.Regexp
	recipientRules   []recipientRule
}

// recipientRule is one line of postfix access(5) syntax in a recipient whitelist.
type recipientRule struct {
	user       string // "" = any user
	domain     string // "" = any domain (a "user@" line)
	subdomains bool   // a bare "domain" line: the domain and its subdomains
}

// alwaysWhitelistedUsers are exempt from greylisting whatever the files say: RFC 5321
// requires postmaster to be reachable, and abuse reports must not be delayed.
// postgrey ships them in its default whitelist_recipients.
var alwaysWhitelistedUsers = []string{"postmaster", "abuse"}

// LoadWhitelist reads postgrey whitelist files: client files (whitelist_clients,
// whitelist_clients.local) and recipient files. A missing file is an error. All the
// errors are returned at once, joined, each as "FILE:LINE: message".
func LoadWhitelist(clientFiles, recipientFiles []string) (*Whitelist, error) {
	w := &Whitelist{}
	var errs []error
	load := func(name string, parse func(string, io.Reader) []error) {
		f, err := os.Open(name)
		if err != nil {
			errs = append(errs, err)
			return
		}
		defer f.Close()
		errs = append(errs, parse(name, f)...)
	}
	for _, name := range clientFiles {
		load(name, w.addClients)
	}
	for _, name := range recipientFiles {
		load(name, w.addRecipients)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return w, nil
}

// ParseClientWhitelist parses one postgrey client whitelist. name is used in errors.
func ParseClientWhitelist(name string, r io.Reader) (*Whitelist, error) {
	w := &Whitelist{}
	if err := errors.Join(w.addClients(name, r)...); err != nil {
		return nil, err
	}
	return w, nil
}

// ParseRecipientWhitelist parses one postgrey recipient whitelist. name is used in errors.
func ParseRecipientWhitelist(name string, r io.Reader) (*Whitelist, error) {
	w := &Whitelist{}
	if err := errors.Join(w.addRecipients(name, r)...); err != nil {
		return nil, err
	}
	return w, nil
}

// lines calls fn with each significant line of a postgrey whitelist: as postgrey does,
// everything from '#' on is a comment (even inside a regexp), and lines are trimmed.
func lines(name string, r io.Reader, fn func(line string) error) []error {
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := fn(line); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", name, n, err))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s:%d: %v", name, n+1, err))
	}
	return errs
}

var (
	reIPv4Full    = regexp.MustCompile(`^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?:/\d{1,2})?$`)
	reIPv4Three   = regexp.MustCompile(`^\d{1,3}\.\d{1,3}\.\d{1,3}$`)
	reIPv4Two     = regexp.MustCompile(`^\d{1,3}\.\d{1,3}$`)
	reIPv6        = regexp.MustCompile(`^.*:.*:.*$`)
	reNoSpaceLine = regexp.MustCompile(`^\S+$`)
)

// addClients parses client whitelist lines, in postgrey's order of interpretation.
func (w *Whitelist) addClients(name string, r io.Reader) []error {
	return lines(name, r, func(line string) error {
		switch {
		case isRegexpLine(line):
			re, err := compileRegexp(line)
			if err != nil {
				return err
			}
			w.clientRegexps = append(w.clientRegexps, re)
		case reIPv4Full.MatchString(line):
			p, err := parseIPv4Net(line, 32)
			if err != nil {
				return err
			}
			w.clientNets = append(w.clientNets, p)
		case reIPv4Three.MatchString(line):
			p, err := parseIPv4Net(line+".0", 24)
			if err != nil {
				return err
			}
			w.clientNets = append(w.clientNets, p)
		case reIPv4Two.MatchString(line):
			// postgrey's code turns "a.b" into a.b.0.0/24 although its comment says /16
			// and its manual says "only the first specified numbers will be checked".
			// We do what the manual says.
			p, err := parseIPv4Net(line+".0.0", 16)
			if err != nil {
				return err
			}
			w.clientNets = append(w.clientNets, p)
		case reIPv6.MatchString(line):
			p, err := parseIPv6Net(line)
			if err != nil {
				return err
			}
			w.clientNets = append(w.clientNets, p)
		case reNoSpaceLine.MatchString(line):
			d := strings.ToLower(strings.TrimSuffix(line, "."))
			if d == "" || strings.Contains(d, "/") {
				return fmt.Errorf("doesn't look like a hostname: %q", line)
			}
			w.clientDomains = append(w.clientDomains, d)
		default:
			return fmt.Errorf("doesn't look like a hostname: %q", line)
		}
		return nil
	})
}

func isRegexpLine(line string) bool {
	return len(line) >= 3 && line[0] == '/' && line[len(line)-1] == '/' &&
		!strings.ContainsAny(line, " \t\v\f\r")
}

// compileRegexp compiles a postgrey "/regexp/" line, case-insensitively like postgrey
// (qr{...}i). Go's RE2 syntax covers what the shipped files use (\d, (?:...), lazy
// quantifiers); Perl-only constructs (look-around, backreferences) are reported.
func compileRegexp(line string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("(?i)" + line[1:len(line)-1])
	if err != nil {
		return nil, fmt.Errorf("bad regexp %s: %v", line, err)
	}
	return re, nil
}

// parseIPv4Net parses "a.b.c.d" or "a.b.c.d/nn" (defaultBits applies without /nn).
// Host bits set in a network are cleared, as NetAddr::IP did for postgrey.
func parseIPv4Net(s string, defaultBits int) (netip.Prefix, error) {
	addr, bitsText, hasBits := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(addr)
	if err != nil || !ip.Is4() {
		return netip.Prefix{}, fmt.Errorf("bad IPv4 address %q", s)
	}
	bits := defaultBits
	if hasBits {
		bits, err = strconv.Atoi(bitsText)
		if err != nil || bits < 0 || bits > 32 {
			return netip.Prefix{}, fmt.Errorf("bad IPv4 netmask in %q", s)
		}
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

func parseIPv6Net(s string) (netip.Prefix, error) {
	addr, bitsText, hasBits := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad IPv6 address %q", s)
	}
	bits := ip.BitLen()
	if hasBits {
		bits, err = strconv.Atoi(bitsText)
		if err != nil || bits < 0 || bits > ip.BitLen() {
			return netip.Prefix{}, fmt.Errorf("bad IPv6 netmask in %q", s)
		}
	}
	if ip.Is4In6() && bits >= 96 {
		// ::ffff:a.b.c.d/nn: Postfix reports IPv4 clients as IPv4, match them so.
		return netip.PrefixFrom(ip.Unmap(), bits-96).Masked(), nil
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

// addRecipients parses recipient whitelist lines (postfix access(5)-like syntax).
func (w *Whitelist) addRecipients(name string, r io.Reader) []error {
	return lines(name, r, func(line string) error {
		if isRegexpLine(line) {
			re, err := compileRegexp(line)
			if err != nil {
				return err
			}
			w.recipientRegexps = append(w.recipientRegexps, re)
			return nil
		}
		if !reNoSpaceLine.MatchString(line) {
			return fmt.Errorf("doesn't look like an address: %q", line)
		}
		line = strings.ToLower(line)
		user, domain, hasAt := strings.Cut(line, "@")
		switch {
		case !hasAt: // domain and its subdomains
			w.recipientRules = append(w.recipientRules, recipientRule{domain: strings.TrimSuffix(user, "."), subdomains: true})
		case user == "" && domain == "":
			return fmt.Errorf("doesn't look like an address: %q", line)
		case user == "":
			// "@domain": that domain only, as in postfix access(5). (postgrey compiled it
			// to a pattern that matches no real address.)
			w.recipientRules = append(w.recipientRules, recipientRule{domain: strings.TrimSuffix(domain, ".")})
		default: // user@domain or user@ (any domain); user+extension matches too
			w.recipientRules = append(w.recipientRules, recipientRule{user: user, domain: strings.TrimSuffix(domain, ".")})
		}
		return nil
	})
}

// MatchClient reports whether a client is whitelisted, by its address or by its
// name as Postfix reports it (client_name, "unknown" when the reverse lookup failed).
// A name entry matches that name and its subdomains.
func (w *Whitelist) MatchClient(ip netip.Addr, name string) bool {
	if w == nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	if ip.IsValid() {
		for _, p := range w.clientNets {
			if p.Contains(ip) {
				return true
			}
		}
	}
	if name == "" {
		return false
	}
	lname := strings.ToLower(strings.TrimSuffix(name, "."))
	for _, d := range w.clientDomains {
		if lname == d || strings.HasSuffix(lname, d) && lname[len(lname)-len(d)-1] == '.' {
			return true
		}
	}
	for _, re := range w.clientRegexps {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// MatchRecipient reports whether a recipient is whitelisted. postmaster@ and abuse@
// (with or without +extension, any domain) always are.
func (w *Whitelist) MatchRecipient(rcpt string) bool {
	lrcpt := strings.ToLower(rcpt)
	at := strings.LastIndexByte(lrcpt, '@')
	user, domain := lrcpt, ""
	if at >= 0 {
		user, domain = lrcpt[:at], lrcpt[at+1:]
	}
	base, _, _ := strings.Cut(user, "+")
	if at >= 0 {
		for _, u := range alwaysWhitelistedUsers {
			if base == u {
				return true
			}
		}
	}
	if w == nil {
		return false
	}
	for _, r := range w.recipientRules {
		if r.subdomains {
			// "domain": the domain or a subdomain (postgrey: (?:\@|\.)domain$).
			if strings.HasSuffix(lrcpt, r.domain) && len(lrcpt) > len(r.domain) {
				if c := lrcpt[len(lrcpt)-len(r.domain)-1]; c == '@' || c == '.' {
					return true
				}
			}
			continue
		}
		if at < 0 || r.user != "" && base != r.user && user != r.user {
			continue
		}
		if r.domain == "" || domain == r.domain {
			return true
		}
	}
	for _, re := range w.recipientRegexps {
		if re.MatchString(rcpt) {
			return true
		}
	}
	return false
}
