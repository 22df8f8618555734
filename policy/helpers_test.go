package policy

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"postgate/internal/syncbuf"
)

// postfixRCPT is what Postfix 3.8 sends at RCPT TO for a TLS client.
const postfixRCPT = `request=smtpd_access_policy
protocol_state=RCPT
protocol_name=ESMTP
helo_name=Mail.Example.ORG
queue_id=
sender=Alice.Smith+tag@Example.org
recipient=Bob@example.net
recipient_count=0
client_address=192.0.2.10
client_name=mail.example.org
reverse_client_name=mail.example.org
instance=1a2b.6655f0a1.8c3d2.0
sasl_method=
sasl_username=
sasl_sender=
size=12345
ccert_subject=
ccert_issuer=
ccert_fingerprint=
ccert_pubkey_fingerprint=
encryption_protocol=TLSv1.3
encryption_cipher=TLS_AES_256_GCM_SHA384
encryption_keysize=256
etrn_domain=
stress=
client_port=41234
policy_context=
server_address=198.51.100.1
server_port=25
compatibility_level=3.6
mail_version=3.8.1

`

// postfixDATA is the same message at DATA (one recipient, so it is sent).
const postfixDATA = `request=smtpd_access_policy
protocol_state=DATA
protocol_name=ESMTP
helo_name=Mail.Example.ORG
queue_id=4XyZ1k2Abcz9
sender=Alice.Smith+tag@Example.org
recipient=Bob@example.net
recipient_count=1
client_address=192.0.2.10
client_name=mail.example.org
reverse_client_name=mail.example.org
instance=1a2b.6655f0a1.8c3d2.0
size=12345
client_port=41234

`

// request builds a request text from postfixRCPT with some attributes
// replaced (or added when absent).
func request(set map[string]string) string {
	var b strings.Builder
	done := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(postfixRCPT, "\n\n"), "\n") {
		name, _, _ := strings.Cut(line, "=")
		if v, ok := set[name]; ok {
			b.WriteString(name + "=" + v + "\n")
			done[name] = true
			continue
		}
		b.WriteString(line + "\n")
	}
	for name, v := range set {
		if !done[name] {
			b.WriteString(name + "=" + v + "\n")
		}
	}
	b.WriteString("\n")
	return b.String()
}

// syncBuffer is the log sink of the server tests, with a line filter.
type syncBuffer struct{ syncbuf.Buffer }

// lines returns the log lines containing all of subs.
func (b *syncBuffer) lines(subs ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		ok := l != ""
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// checkFunc is a Check made of a function: the seam for tests.
type checkFunc struct {
	name string
	fn   func(ctx context.Context, req *Request, d *Decision) error
}

func (c checkFunc) Name() string { return c.name }
func (c checkFunc) Check(ctx context.Context, req *Request, d *Decision) error {
	return c.fn(ctx, req, d)
}

// countingCheck counts its calls and does nothing else.
type countingCheck struct {
	mu sync.Mutex
	n  int
}

func (c *countingCheck) Name() string { return "count" }
func (c *countingCheck) Check(context.Context, *Request, *Decision) error {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return nil
}

func (c *countingCheck) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func mustParse(t testing.TB, s string) *Request {
	t.Helper()
	req, err := parseText(s)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return req
}

// counterValue reads a counter or gauge.
func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}
