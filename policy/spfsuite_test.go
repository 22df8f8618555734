package policy_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"postgate/internal/resolver"
	"postgate/policy"
	"postgate/policy/spf"
	"postgate/policy/spf/spftest"
)

// TestRFC7208SuiteThroughServer runs the RFC 7208 test suite end to end: each
// case is a real policy request over a loopback socket to a Server whose
// pipeline holds the SPF check, resolving through a real DNS server that
// serves the case's zone data. The result is read back from what Postfix
// would see: "550 5.7.23 <explanation>" for fail, and the Received-SPF
// header for every other result. A case without MAIL FROM is sent with the
// null sender, which RFC 7208 section 2.4 checks as postmaster@HELO.
func TestRFC7208SuiteThroughServer(t *testing.T) {
	path, err := spftest.DefaultPath("rfc7208-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	score := spftest.Run(t, path, nil, func(t *testing.T, c spftest.Case) spftest.Outcome {
		res, err := resolver.New(resolver.Options{Servers: []string{c.DNS}, Timeout: 300 * time.Millisecond, CacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		p := spf.DefaultPolicy()
		p.SkipClients = nil // the suite uses loopback addresses too
		p.ReceiverName = "receiver.example.org"
		// The suite writes "DEFAULT" where the receiver uses its own text.
		p.DefaultExplanation = "DEFAULT"
		check := policy.NewSPFCheck(spf.New(spf.Options{Resolver: res, ReceiverName: p.ReceiverName}), &p)
		log := slog.New(slog.DiscardHandler)
		srv := policy.NewServer(policy.NewPipeline(policy.PipelineOptions{Logger: log}, check), policy.ServerOptions{Logger: log})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		defer srv.Shutdown(t.Context())

		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=unknown\nhelo_name=%s\nsender=%s\nrecipient=user@receiver.example.org\ninstance=1\n\n",
			c.Host, c.Helo, c.MailFrom)
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		action := strings.TrimSuffix(strings.TrimPrefix(line, "action="), "\n")
		switch {
		case strings.HasPrefix(action, "550 5.7.23 "):
			exp := strings.TrimPrefix(action, "550 5.7.23 ")
			if exp == p.DefaultExplanation {
				exp = "" // the domain gave none: spftest's "DEFAULT"
			}
			return spftest.Outcome{Result: spf.Fail, Explanation: exp}
		case strings.HasPrefix(action, "PREPEND Received-SPF: "):
			result, _, _ := strings.Cut(strings.TrimPrefix(action, "PREPEND Received-SPF: "), " ")
			return spftest.Outcome{Result: result}
		}
		t.Fatalf("unexpected reply %q", action)
		return spftest.Outcome{}
	})
	t.Logf("RFC 7208 suite through the policy server: %d of %d passed", score.Passed, score.Total)
	if score.Total != 203 {
		t.Errorf("suite has %d tests, want 203", score.Total)
	}
}
