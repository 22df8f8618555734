package resolver

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// DefaultResolvConf is where [New] finds servers when none are given.
const DefaultResolvConf = "/etc/resolv.conf"

// maxNameservers is glibc's MAXNS: later nameserver lines are ignored.
const maxNameservers = 3

// ServersFromResolvConf returns the nameservers of a resolv.conf file as
// host:port (port 53, IPv6 bracketed, zones kept), in file order, at most
// three as the C library reads (MAXNS). Without nameserver lines it returns
// the local machine, as resolv.conf(5) says.
// A malformed nameserver line is an error naming FILE:LINE.
func ServersFromResolvConf(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseResolvConf(path, bytes.NewReader(data))
}

func parseResolvConf(path string, r io.Reader) ([]string, error) {
	var servers []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "nameserver" {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"nameserver ADDRESS\"", path, n)
		}
		addr, err := netip.ParseAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: nameserver: %v", path, n, err)
		}
		if len(servers) < maxNameservers {
			servers = append(servers, net.JoinHostPort(addr.String(), "53"))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(servers) == 0 {
		servers = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return servers, nil
}
