// Package spftest runs the RFC 7208 test suite (the openspf.org YAML, as
// shipped in blitiri.com.ar/go/spf's testdata) against any SPF
// implementation: each scenario's zone data is served by an in-process DNS
// server on loopback (internal/dnstest, TTL 0), and each test goes through
// a function the caller gives, which may call a Checker directly or go
// through the policy server's socket.
package spftest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"postgate/internal/dnstest"
)

// Case is one test of the suite.
type Case struct {
	Scenario    string // description of the scenario (YAML document)
	Name        string
	Description string
	Spec        string
	Helo        string
	Host        string // client IP, as written in the suite (may be upper case)
	MailFrom    string // "" means a HELO check
	// Results are the acceptable results.
	Results []string
	// Explanation is the expected explanation of a fail: "" when the test
	// does not check it, "DEFAULT" when the implementation's own default
	// must be used (the domain published none).
	Explanation string
	// DNS is the address (127.0.0.1:port) of the server with the
	// scenario's zone.
	DNS string
}

// Outcome is what the implementation under test found.
type Outcome struct {
	Result string
	// Explanation is the domain's explanation, "" when it gave none (so
	// that the default is used).
	Explanation string
}

// Scenario is one YAML document of the suite: tests sharing zone data.
type Scenario struct {
	Description string
	Cases       []Case
	zone        map[string][]zoneEntry
}

// DefaultPath returns the path of a suite file ("rfc7208-tests.yml") in
// blitiri.com.ar/go/spf's module directory.
func DefaultPath(file string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "blitiri.com.ar/go/spf").Output()
	if err != nil {
		return "", fmt.Errorf("locating blitiri.com.ar/go/spf: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "testdata", file), nil
}

// Load reads a suite file.
func Load(path string) ([]Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Scenario
	for doc := 1; ; doc++ {
		var s yamlScenario
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, doc, err)
		}
		sc := Scenario{Description: s.Description, zone: s.ZoneData}
		for name, t := range s.Tests {
			sc.Cases = append(sc.Cases, Case{
				Scenario: s.Description, Name: name, Description: strings.TrimSpace(t.Description),
				Spec: t.Spec.String(), Helo: t.Helo, Host: t.Host, MailFrom: t.MailFrom,
				Results: t.Result, Explanation: t.Explanation,
			})
		}
		sort.Slice(sc.Cases, func(i, j int) bool { return sc.Cases[i].Name < sc.Cases[j].Name })
		out = append(out, sc)
	}
	return out, nil
}

// Score is the outcome of a run.
type Score struct {
	Total  int
	Passed int
	// Failed describes each failing test: "name: want X, got Y".
	Failed []string
}

// Run serves each scenario of the suite file from its own DNS server and
// calls check for every test in a subtest named scenario/test, failing the
// subtest when the result is not one of the expected ones or, when the
// test gives one, the explanation differs. expected maps test names that
// are known to fail to the reason; those are reported but do not fail.
func Run(t *testing.T, path string, expected map[string]string, check func(t *testing.T, c Case) Outcome) Score {
	t.Helper()
	scenarios, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var score Score
	for _, sc := range scenarios {
		srv := dnstest.NewServer(t, nil)
		Serve(t, srv, sc)
		for _, c := range sc.Cases {
			c.DNS = srv.Addr
			score.Total++
			t.Run(subtestName(sc.Description)+"/"+c.Name, func(t *testing.T) {
				got := check(t, c)
				problem := Compare(c, got)
				switch {
				case problem == "":
					score.Passed++
				case expected[c.Name] != "":
					score.Failed = append(score.Failed, c.Name+": "+problem)
					t.Logf("known failure (%s): %s", expected[c.Name], problem)
				default:
					score.Failed = append(score.Failed, c.Name+": "+problem)
					t.Errorf("%s (spec %s): %s", c.Name, c.Spec, problem)
				}
			})
		}
	}
	return score
}

func subtestName(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), " ", "_")
}

// Compare checks an outcome against a case; "" means it passes.
func Compare(c Case, got Outcome) string {
	if !slices.Contains(c.Results, got.Result) {
		return fmt.Sprintf("result %q, want %s", got.Result, strings.Join(c.Results, " or "))
	}
	if got.Result != "fail" || c.Explanation == "" {
		return ""
	}
	want := c.Explanation
	if want == "DEFAULT" {
		want = ""
	}
	if got.Explanation != want {
		return fmt.Sprintf("explanation %q, want %q", got.Explanation, c.Explanation)
	}
	return ""
}

// Serve loads a scenario's zone data into a server, the way the suite's
// own driver (pyspf's testspf.py) interprets it:
//   - a type SPF record is also served as TXT when the name has no TXT
//     entry at all ("TXT: NONE" counts as one and serves nothing);
//   - a list of strings is one record of several character-strings;
//   - TIMEOUT drops the queries of every type the name has no record of;
//   - SERVFAIL answers those with SERVFAIL; CNAMELOOP is a CNAME to itself.
func Serve(t testing.TB, srv *dnstest.Server, sc Scenario) {
	t.Helper()
	for name, entries := range sc.zone {
		owner := dns.Fqdn(name)
		hdr := func(rrtype uint16) dns.RR_Header {
			return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 0}
		}
		hasTXT := false
		for _, e := range entries {
			if e.TXT != nil {
				hasTXT = true
			}
		}
		types := map[uint16]bool{}
		var rrs []dns.RR
		var timeout, servfail bool
		for _, e := range entries {
			switch {
			case e.A != nil:
				for _, a := range e.A {
					rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA), A: parseIP(t, a).To4()})
				}
			case e.AAAA != nil:
				for _, a := range e.AAAA {
					rrs = append(rrs, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: parseIP(t, a)})
				}
			case e.MX != nil:
				rrs = append(rrs, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: e.MX.Pref, Mx: dns.Fqdn(e.MX.Host)})
			case e.SPF != nil:
				rrs = append(rrs, &dns.SPF{Hdr: hdr(dns.TypeSPF), Txt: escapeTXT(e.SPF)})
				if !hasTXT {
					rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: escapeTXT(e.SPF)})
				}
			case e.TXT != nil:
				if len(e.TXT) == 1 && e.TXT[0] == "NONE" {
					continue
				}
				rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: escapeTXT(e.TXT)})
			case e.PTR != nil:
				for _, p := range e.PTR {
					rrs = append(rrs, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: dns.Fqdn(p)})
				}
			case e.CNAME != "":
				rrs = append(rrs, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(e.CNAME)})
			case e.CNAMELOOP:
				rrs = append(rrs, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: owner})
			case e.TIMEOUT:
				timeout = true
			case e.SERVFAIL:
				servfail = true
			}
		}
		for _, rr := range rrs {
			types[rr.Header().Rrtype] = true
		}
		srv.AddRR(rrs...)
		if timeout || servfail {
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeTXT,
				dns.TypeSPF, dns.TypePTR, dns.TypeCNAME} {
				if types[qt] {
					continue
				}
				if timeout {
					srv.Set(name, qt, dnstest.Behavior{Drop: true})
				} else {
					srv.Set(name, qt, dnstest.Behavior{Rcode: dns.RcodeServerFailure})
				}
			}
		}
	}
}

func parseIP(t testing.TB, s string) net.IP {
	t.Helper()
	ip := net.ParseIP(s)
	if ip == nil {
		t.Fatalf("spftest: bad address %q", s)
	}
	return ip
}

// escapeTXT turns raw character-strings into miekg/dns's presentation
// form, which it parses back when packing: only "\" needs escaping.
func escapeTXT(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ReplaceAll(s, `\`, `\\`)
	}
	return out
}

type yamlScenario struct {
	Description string
	Tests       map[string]yamlTest
	ZoneData    map[string][]zoneEntry `yaml:"zonedata"`
}

type yamlTest struct {
	Description string
	Spec        stringList
	Helo        string
	Host        string
	MailFrom    string `yaml:"mailfrom"`
	Result      stringList
	Explanation string
}

// zoneEntry is one item of a name's list; one field is set.
type zoneEntry struct {
	A         stringList `yaml:"A"`
	AAAA      stringList `yaml:"AAAA"`
	MX        *mx        `yaml:"MX"`
	SPF       stringList `yaml:"SPF"`
	TXT       stringList `yaml:"TXT"`
	PTR       stringList `yaml:"PTR"`
	CNAME     string     `yaml:"CNAME"`
	TIMEOUT   bool       `yaml:"TIMEOUT"`
	SERVFAIL  bool       `yaml:"SERVFAIL"`
	CNAMELOOP bool       `yaml:"CNAMELOOP"`
}

// stringList is a YAML scalar or sequence of scalars. An empty sequence
// stays a non-nil empty list (a TXT record with no strings).
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		out := []string{}
		for _, c := range n.Content {
			out = append(out, c.Value)
		}
		*l = out
		return nil
	}
	*l = []string{n.Value}
	return nil
}

func (l stringList) String() string { return strings.Join(l, ", ") }

type mx struct {
	Pref uint16
	Host string
}

func (m *mx) UnmarshalYAML(n *yaml.Node) error {
	var seq []any
	if err := n.Decode(&seq); err != nil || len(seq) != 2 {
		return fmt.Errorf("line %d: MX wants [preference, host]", n.Line)
	}
	p, ok := seq[0].(int)
	h, ok2 := seq[1].(string)
	if !ok || !ok2 {
		return fmt.Errorf("line %d: MX wants [preference, host]", n.Line)
	}
	m.Pref, m.Host = uint16(p), h
	return nil
}
