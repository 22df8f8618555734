package rbl

import (
	"fmt"
	"net/netip"
	"strings"
)

// ErrorKind names an answer that is never a listing, whatever the filter:
// the list is telling the querier something about the query, not about the
// client. It is the "kind" label of postgate_rbl_list_errors_total.
type ErrorKind string

const (
	ErrOpenResolver   ErrorKind = "open_resolver"    // Spamhaus 127.255.255.254
	ErrRateLimited    ErrorKind = "rate_limited"     // Spamhaus 127.255.255.255
	ErrUnsupported    ErrorKind = "unsupported"      // Spamhaus 127.255.255.252
	ErrListError      ErrorKind = "list_error"       // rest of 127.255.255.0/24
	ErrQueryBlocked   ErrorKind = "query_blocked"    // DNSWL 127.0.0.255
	ErrIPOnDomainList ErrorKind = "ip_on_domain"     // DBL 127.0.1.255
	ErrNotLoopback    ErrorKind = "outside_loopback" // any answer outside 127.0.0.0/8
)

// errorMeanings are the texts logged and printed for each kind; they say
// what the admin has to fix.
var errorMeanings = map[ErrorKind]string{
	ErrOpenResolver:   "query via public/open resolver refused by Spamhaus: use your own recursive resolver or a DQS key",
	ErrRateLimited:    "excessive number of queries: the list refuses this resolver (rate limit), use a DQS key or a feed",
	ErrUnsupported:    "typo in the zone or unsupported query type (Spamhaus 127.255.255.252)",
	ErrListError:      "list error code in 127.255.255.0/24, not a listing",
	ErrQueryBlocked:   "query blocked or over quota (DNSWL 127.0.0.255), not a listing",
	ErrIPOnDomainList: "IP address queried against a domain list (DBL 127.0.1.255): configure the list with a domain target",
	ErrNotLoopback:    "answer outside 127.0.0.0/8: not a list answer (resolver rewriting NXDOMAIN, or the list was shut down and wildcards everything)",
}

// Meaning is the human text of the error kind.
func (k ErrorKind) Meaning() string { return errorMeanings[k] }

// classify returns the error kind of an answer, or "" when the answer may
// be a listing (the filter then decides).
func classify(a netip.Addr) ErrorKind {
	a = a.Unmap()
	if !a.Is4() {
		return ErrNotLoopback
	}
	b := a.As4()
	switch {
	case b[0] != 127:
		return ErrNotLoopback
	case b[1] == 255 && b[2] == 255:
		switch b[3] {
		case 252:
			return ErrUnsupported
		case 254:
			return ErrOpenResolver
		case 255:
			return ErrRateLimited
		}
		return ErrListError
	case b == [4]byte{127, 0, 0, 255}:
		return ErrQueryBlocked
	case b == [4]byte{127, 0, 1, 255}:
		return ErrIPOnDomainList
	}
	return ""
}

// knownMeanings decode the answers of widely used lists for the report and
// the logs. Keys are zone suffixes, matched on a label boundary so that DQS
// zones (zen.dq.spamhaus.net) and mirrors are recognised too.
var knownMeanings = []struct {
	suffixes []string
	meaning  func(b [4]byte) string
}{
	{[]string{"zen.spamhaus.org", "zen.dq.spamhaus.net", "sbl-xbl.spamhaus.org", "sbl.spamhaus.org",
		"xbl.spamhaus.org", "pbl.spamhaus.org", "sbl.dq.spamhaus.net", "xbl.dq.spamhaus.net", "pbl.dq.spamhaus.net"}, zenMeaning},
	{[]string{"dbl.spamhaus.org", "dbl.dq.spamhaus.net"}, dblMeaning},
	{[]string{"list.dnswl.org", "dwl.dnswl.org"}, dnswlMeaning},
}

func zenMeaning(b [4]byte) string {
	if b[0] != 127 || b[1] != 0 || b[2] != 0 {
		return ""
	}
	switch {
	case b[3] == 2:
		return "SBL: Spamhaus SBL data"
	case b[3] == 3:
		return "SBL CSS: snowshoe spam source"
	case b[3] >= 4 && b[3] <= 7:
		return "XBL: exploited host (botnet, proxy, malware)"
	case b[3] == 9:
		return "SBL DROP/EDROP: hijacked network"
	case b[3] == 10:
		return "PBL: dynamic/end-user range (ISP maintained)"
	case b[3] == 11:
		return "PBL: dynamic/end-user range (Spamhaus maintained)"
	case b[3] == 30:
		return "BCL: botnet controller"
	}
	return ""
}

func dblMeaning(b [4]byte) string {
	if b[0] != 127 || b[1] != 0 || b[2] != 1 {
		return ""
	}
	switch b[3] {
	case 2:
		return "DBL: spam domain"
	case 4:
		return "DBL: phishing domain"
	case 5:
		return "DBL: malware domain"
	case 6:
		return "DBL: botnet C&C domain"
	case 102:
		return "DBL: abused legitimate spam domain"
	case 103:
		return "DBL: abused spammed redirector domain"
	case 104:
		return "DBL: abused legitimate phish domain"
	case 105:
		return "DBL: abused legitimate malware domain"
	case 106:
		return "DBL: abused legitimate botnet C&C domain"
	}
	return ""
}

var dnswlTrust = [4]string{"none", "low", "medium", "high"}

func dnswlMeaning(b [4]byte) string {
	if b[0] != 127 || b[1] != 0 || b[3] > 3 {
		return ""
	}
	return fmt.Sprintf("DNSWL: category %d, trust %s", b[2], dnswlTrust[b[3]])
}

// answerMeaning describes a non-error answer of zone.
func answerMeaning(zone string, a netip.Addr) string {
	b := a.Unmap().As4()
	for _, k := range knownMeanings {
		for _, s := range k.suffixes {
			if zone == s || strings.HasSuffix(zone, "."+s) {
				if m := k.meaning(b); m != "" {
					return m
				}
				return "listed (code not documented for this list)"
			}
		}
	}
	return "listed"
}
