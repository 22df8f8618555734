// Package resolver is the one DNS resolver of the daemon: SPF, DNSBL and
// DKIM key lookups all go through it, so they share one TTL-respecting cache.
package resolver

import (
	"context"
	"net"
	"net/netip"
)

// Resolver is the seam every DNS consumer depends on. Its method set is a
// superset of blitiri.com.ar/go/spf's DNSResolver, so a Resolver can be handed
// to the SPF library as it is.
//
// Errors are always *net.DNSError, never wrapped, because the SPF library
// tells "not found" from "temporary" only on an unwrapped *net.DNSError:
//   - the name does not exist (NXDOMAIN): IsNotFound, Err == ErrNoSuchHost
//   - the name exists but has no record of that type (NODATA): IsNotFound,
//     Err == ErrNoSuchRecord
//   - server failure, refusal, timeout: IsTemporary (and IsTimeout on timeouts)
type Resolver interface {
	// LookupTXT returns each TXT record with its strings concatenated.
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	// LookupIPAddr returns the A and AAAA records of host.
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	// LookupAddr returns the PTR names of an IP address given as text.
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	// LookupA returns only the A records of name (what a DNSBL answers).
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
}

// The Err texts of *net.DNSError that keep "does not exist" and "no such
// record" apart.
const (
	ErrNoSuchHost   = "no such host"
	ErrNoSuchRecord = "no such record"
)
