package spf

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"postgate/internal/resolver"
	"postgate/policy/spf/spftest"
)

// knownFailures lists the suite's tests this package does not pass, with
// the reason; docs/conformance.md repeats them.
var knownFailures = map[string]string{}

// newSuiteChecker returns a Checker resolving through the server at addr
// without a cache (the suite runs with TTL 0 anyway), with a short
// per-query timeout so that the suite's TIMEOUT records cost little.
func newSuiteChecker(t testing.TB, addr string) *Checker {
	t.Helper()
	res, err := resolver.New(resolver.Options{
		Servers:   []string{addr},
		Timeout:   300 * time.Millisecond,
		CacheSize: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Resolver: res, ReceiverName: "receiver.example.org"})
}

// suiteCheck runs one suite case through a Checker: a HELO check when the
// case has no MAIL FROM, a MAIL FROM check otherwise.
func suiteCheck(t *testing.T, c spftest.Case) spftest.Outcome {
	ip, err := netip.ParseAddr(c.Host)
	if err != nil {
		t.Fatalf("bad host %q: %v", c.Host, err)
	}
	ch := newSuiteChecker(t, c.DNS)
	var r Result
	if c.MailFrom == "" {
		r = ch.CheckHelo(context.Background(), ip, c.Helo)
		// The null sender is checked as postmaster@HELO too.
		if m := ch.CheckMailFrom(context.Background(), ip, c.Helo, ""); m.Result != r.Result {
			t.Errorf("null sender: %s, HELO check: %s", m.Result, r.Result)
		}
	} else {
		r = ch.CheckMailFrom(context.Background(), ip, c.Helo, c.MailFrom)
	}
	t.Logf("%s: %s (mechanism %q, problem %q, explanation %q)", c.Name, r.Result, r.Mechanism, r.Problem, r.Explanation)
	return spftest.Outcome{Result: r.Result, Explanation: r.Explanation}
}

func TestRFC7208Suite(t *testing.T) {
	path, err := spftest.DefaultPath("rfc7208-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	score := spftest.Run(t, path, knownFailures, suiteCheck)
	t.Logf("RFC 7208 suite: %d of %d passed", score.Passed, score.Total)
	for _, f := range score.Failed {
		t.Logf("failed: %s", f)
	}
	if score.Total != 203 {
		t.Errorf("suite has %d tests, want 203", score.Total)
	}
}

func TestPySPFSuite(t *testing.T) {
	path, err := spftest.DefaultPath("pyspf-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	// default= is a pre-RFC pyspf extension ("ambiguous" is not even an
	// SPF result); RFC 7208 section 6 makes it an ignored unknown modifier.
	pyspfOnly := map[string]string{
		"default-modifier":       "pyspf's default= extension",
		"default-modifier-harsh": "pyspf's default= extension",
	}
	score := spftest.Run(t, path, pyspfOnly, suiteCheck)
	t.Logf("pyspf suite: %d of %d passed", score.Passed, score.Total)
}
