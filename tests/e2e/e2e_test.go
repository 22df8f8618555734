package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// sc is the handle a scenario gets: its subtest, the environment, and the
// reason printed on the PASS/FAIL/SKIP line.
type sc struct {
	*testing.T
	e      *env
	reason string
}

// fail records the first failure reason and stops the scenario.
func (s *sc) fail(format string, args ...any) {
	s.Helper()
	msg := fmt.Sprintf(format, args...)
	if s.reason == "" {
		s.reason = msg
	}
	s.Fatal(msg)
}

// check records a failure but lets the scenario continue.
func (s *sc) check(ok bool, format string, args ...any) {
	s.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if s.reason == "" {
		s.reason = msg
	}
	s.Error(msg)
}

func (s *sc) skip(format string, args ...any) {
	s.Helper()
	s.reason = fmt.Sprintf(format, args...)
	s.Skip(s.reason)
}

// needs skips the scenario while a section is not in configs/postgate.toml,
// and fails it when the section exists but the e2e config could not be made
// for it (a landed feature must not go untested).
func (s *sc) needs(sections ...string) {
	s.Helper()
	for _, name := range sections {
		if !s.e.hasSection(name) {
			s.skip("[%s] is not in configs/postgate.toml yet", name)
		}
	}
	for _, n := range s.e.notes {
		for _, name := range sections {
			if strings.Contains(n, "["+name+"]") || (name == "dkim" && strings.Contains(n, "genkey")) {
				s.fail("cannot configure the e2e instance: %s", n)
			}
		}
	}
}

type scenario struct {
	name string
	run  func(s *sc)
}

var scenarios = []scenario{
	{"greylisting", scenarioGreylisting},
	{"spf", scenarioSPF},
	{"dnsbl", scenarioDNSBL},
	{"dkim-outbound", scenarioDKIMOutbound},
	{"dkim-no-signing-oracle", scenarioDKIMNoOracle},
	{"dkim-inbound", scenarioDKIMInbound},
	{"postgate-down", scenarioPostgateDown},
	{"reload", scenarioReload},
}

func TestE2E(t *testing.T) {
	e := newEnv(t)
	var passed, failed, skipped int
	for _, scn := range scenarios {
		s := &sc{e: e}
		t.Run(scn.name, func(t *testing.T) {
			s.T = t
			scn.run(s)
		})
		switch {
		case s.T.Failed():
			failed++
			fmt.Printf("FAIL %s: %s\n", scn.name, oneLine(s.reason))
		case s.T.Skipped():
			skipped++
			fmt.Printf("SKIP %s: %s\n", scn.name, oneLine(s.reason))
		default:
			passed++
			fmt.Printf("PASS %s\n", scn.name)
		}
	}
	if failed > 0 {
		t.Logf("postgate log (tail):\n%s", readTail(e.path("postgate", "postgate.log"), 60))
		t.Logf("postfix log (tail):\n%s", readTail(e.pfLog, 60))
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}
