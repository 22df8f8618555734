package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written the way mail admins write them:
// "300s", "5m", "2d", "1h30m", "500ms". A bare number is refused because
// "300" could mean seconds or minutes depending on which tool one came from.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(FormatDuration(time.Duration(d))), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

var durationUnits = []struct {
	suffix string
	unit   time.Duration
}{
	// Longest suffix first so "ms" is not read as "m".
	{"ms", time.Millisecond},
	{"s", time.Second},
	{"m", time.Minute},
	{"h", time.Hour},
	{"d", 24 * time.Hour},
}

// ParseDuration parses a sequence of integer+unit pairs with the units ms, s,
// m, h and d.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	if s == "" {
		return 0, fmt.Errorf("empty duration (use e.g. \"5m\", \"2d\")")
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("bad duration %q: expected a number at %q", orig, s)
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q: %v", orig, err)
		}
		s = s[i:]
		var unit time.Duration
		for _, u := range durationUnits {
			if strings.HasPrefix(s, u.suffix) {
				unit = u.unit
				s = s[len(u.suffix):]
				break
			}
		}
		if unit == 0 {
			return 0, fmt.Errorf("bad duration %q: missing or unknown unit (use ms, s, m, h or d)", orig)
		}
		if n > int64((1<<63-1)/unit) || total+time.Duration(n)*unit < total {
			return 0, fmt.Errorf("bad duration %q: too large", orig)
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}

// FormatDuration writes d in the largest whole units, the inverse of ParseDuration.
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	for i := len(durationUnits) - 1; i >= 0; i-- {
		u := durationUnits[i]
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.suffix)
			d -= n * u.unit
		}
	}
	if d > 0 {
		fmt.Fprintf(&b, "%dns", int64(d))
	}
	return b.String()
}

// FileMode is a Unix permission written in octal, as in chmod: "0660".
type FileMode uint32

func (m *FileMode) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 8, 32)
	if err != nil || v > 0o7777 {
		return fmt.Errorf("bad file mode %q: want octal like \"0660\"", b)
	}
	*m = FileMode(v)
	return nil
}

func (m FileMode) MarshalText() ([]byte, error) { return []byte(fmt.Sprintf("%04o", uint32(m))), nil }

// ListenAddr is a socket in Postfix notation: "inet:host:port" or
// "unix:/path/to/socket". A bare "host:port" means inet.
type ListenAddr struct {
	Network string // "tcp" or "unix"
	Address string
}

func (a *ListenAddr) UnmarshalText(b []byte) error {
	v, err := ParseListenAddr(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

func (a ListenAddr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

func (a ListenAddr) String() string {
	if a.Network == "unix" {
		return "unix:" + a.Address
	}
	return "inet:" + a.Address
}

// ParseListenAddr parses Postfix's socket notation.
func ParseListenAddr(s string) (ListenAddr, error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if p == "" {
			return ListenAddr{}, fmt.Errorf("bad listen address %q: empty socket path", s)
		}
		return ListenAddr{Network: "unix", Address: p}, nil
	case strings.HasPrefix(s, "inet:"):
		s = strings.TrimPrefix(s, "inet:")
	case strings.Contains(s, ":") && !strings.Contains(s, "/"):
	default:
		return ListenAddr{}, fmt.Errorf("bad listen address %q: want \"inet:host:port\" or \"unix:/path\"", s)
	}
	host, port, err := splitHostPort(s)
	if err != nil {
		return ListenAddr{}, fmt.Errorf("bad listen address %q: %v", s, err)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return ListenAddr{}, fmt.Errorf("bad listen address %q: host must be an IP address", s)
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return ListenAddr{}, fmt.Errorf("bad listen address %q: bad port %q", s, port)
	}
	_ = n
	return ListenAddr{Network: "tcp", Address: joinHostPort(host, port)}, nil
}

func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return "", "", fmt.Errorf("want [ipv6]:port")
		}
		return s[1:end], s[end+2:], nil
	}
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", fmt.Errorf("missing port")
	}
	host, port = s[:i], s[i+1:]
	if strings.Contains(host, ":") {
		return "", "", fmt.Errorf("IPv6 addresses must be bracketed: [::1]:port")
	}
	return host, port, nil
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// ParsePrefix accepts a CIDR ("192.0.2.0/24") or a single address, which
// becomes a /32 or /128. Host bits must be zero: "192.0.2.1/24" is far more
// often a typo than an intent, so it is refused with the network it meant.
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad network %q: not an IP address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad network %q: %v", s, err)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("bad network %q: host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// ParseDNSServer accepts "ip", "ip:port", "[ipv6]:port" and returns host:port.
func ParseDNSServer(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", fmt.Errorf("bad DNS server %q: want an IP address with optional port (\"127.0.0.1:53\", \"[::1]:53\")", s)
	}
	return ap.String(), nil
}
