package milter

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"postgate/dkim"
	"postgate/internal/dnstest"
	"postgate/internal/resolver"
	"postgate/internal/syncbuf"
)

const (
	testAuthservID = "mx.example.org"
	testDomain     = "example.com"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
	edKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
)

// testRSA returns one RSA-2048 key shared by the tests (generation is slow).
func testRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

// txtRecord returns zone-file text publishing pub at sel._domainkey.domain,
// cut into strings under 255 bytes.
func txtRecord(t testing.TB, sel, domain string, pub crypto.PublicKey) string {
	t.Helper()
	var k, p string
	switch pk := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pk)
		if err != nil {
			t.Fatal(err)
		}
		k, p = "rsa", base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		k, p = "ed25519", base64.StdEncoding.EncodeToString(pk)
	}
	val := "v=DKIM1; k=" + k + "; p=" + p
	var parts []string
	for len(val) > 200 {
		parts = append(parts, `"`+val[:200]+`"`)
		val = val[200:]
	}
	parts = append(parts, `"`+val+`"`)
	return fmt.Sprintf("%s._domainkey.%s. 0 IN TXT %s", sel, domain, strings.Join(parts, " "))
}

// env is a milter server on loopback with keys for example.com (RSA and
// Ed25519, dual signing) published in a test DNS server.
type env struct {
	t        testing.TB
	srv      *Server
	addr     string
	dns      *dnstest.Server
	res      resolver.Resolver
	keyring  *dkim.Keyring
	rsa, ed  *dkim.Key
	verify   *dkim.VerifyOptions
	log      *syncbuf.Buffer
	listener net.Listener
}

func newEnv(t testing.TB, mutate func(*Options)) *env {
	t.Helper()
	rk := testRSA(t)
	e := &env{t: t, log: &syncbuf.Buffer{}}
	e.dns = dnstest.NewServer(t, dnstest.Zone{
		"example.com. 0 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
		txtRecord(t, "rsa1", testDomain, rk.Public()),
		txtRecord(t, "ed1", testDomain, edKey.Public()),
		"other.example. 0 IN SOA ns.other.example. hostmaster.other.example. 1 3600 600 86400 60",
		txtRecord(t, "s1", "other.example", rk.Public()),
	})
	res, err := resolver.New(resolver.Options{Servers: []string{e.dns.Addr}, Timeout: 2 * time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	e.res = res
	e.rsa = &dkim.Key{Domain: testDomain, Selector: "rsa1", Signer: rk}
	e.ed = &dkim.Key{Domain: testDomain, Selector: "ed1", Signer: edKey}
	e.keyring = dkim.NewKeyring([]dkim.Rule{
		{Pattern: "*@example.com", Key: e.rsa},
		{Pattern: "*@example.com", Key: e.ed},
	})
	e.verify = &dkim.VerifyOptions{Resolver: res, Timeout: 2 * time.Second}
	opts := Options{
		Keyring:       e.keyring,
		VerifyOptions: e.verify,
		AuthservID:    testAuthservID,
		Logger:        slog.New(slog.NewTextHandler(e.log, nil)),
	}
	if mutate != nil {
		mutate(&opts)
	}
	e.srv, err = NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.listener = l
	e.addr = l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return e
}

func (e *env) logText() string { return e.log.String() }

// session opens a milter session as go-milter's client (which, like an
// MTA without version 6 options, gets header values without the leading
// space and waits for a reply to each event).
func (e *env) session() *gomilter.ClientSession {
	e.t.Helper()
	c := gomilter.NewClientWithOptions("tcp", e.addr, gomilter.ClientOptions{
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader,
	})
	s, err := c.Session()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close() })
	return s
}

// client describes the SMTP client as Postfix reports it at connect.
type client struct {
	host       string
	family     gomilter.ProtoFamily
	port       uint16
	addr       string
	daemonName string // sent at connect only, as Postfix does
}

var (
	external   = client{"mail.outside.example", gomilter.FamilyInet, 40000, "192.0.2.10", "smtpd"}
	submission = client{"laptop.isp.example", gomilter.FamilyInet, 40001, "198.51.100.7", "ORIGINATING"}
	pickup     = client{"localhost", gomilter.FamilyInet, 0, "127.0.0.1", "mx.example.org"}
)

// connect sends the connect event with its macros.
func connect(t testing.TB, s *gomilter.ClientSession, c client) {
	t.Helper()
	if err := s.Macros(gomilter.CodeConn, "{daemon_name}", c.daemonName, "{client_addr}", c.addr, "j", "mx.example.org"); err != nil {
		t.Fatal(err)
	}
	act, err := s.Conn(c.host, c.family, c.port, c.addr)
	if err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("Conn: %v %v", act, err)
	}
	if act, err := s.Helo("helo.example"); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("Helo: %v %v", act, err)
	}
}

// field is a header field as in the message: value after the colon.
type field struct{ name, value string }

// splitMessage splits a message (LF line ends) into its fields and body.
func splitMessage(t testing.TB, msg string) ([]field, string) {
	t.Helper()
	head, body, ok := strings.Cut(msg, "\n\n")
	if !ok {
		t.Fatalf("message without a blank line")
	}
	var fields []field
	for _, line := range strings.Split(head, "\n") {
		if line[0] == ' ' || line[0] == '\t' {
			fields[len(fields)-1].value += "\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		fields = append(fields, field{name, value})
	}
	return fields, body
}

// transaction sends one message as Postfix does: MAIL (with mailMacros),
// RCPT, each header with the one leading space stripped, EOH, the body
// with CRLF line ends in chunks of chunk bytes, EOM. It returns the
// modifications and the final action.
func transaction(t testing.TB, s *gomilter.ClientSession, msg string, chunk int, mailMacros ...string) ([]gomilter.ModifyAction, *gomilter.Action) {
	t.Helper()
	fields, body := splitMessage(t, msg)
	if len(mailMacros) > 0 {
		if err := s.Macros(gomilter.CodeMail, mailMacros...); err != nil {
			t.Fatal(err)
		}
	}
	if act, err := s.Mail("sender@example.net", nil); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("Mail: %v %v", act, err)
	}
	if err := s.Macros(gomilter.CodeRcpt, "{rcpt_addr}", "rcpt@example.net"); err != nil {
		t.Fatal(err)
	}
	if act, err := s.Rcpt("rcpt@example.net", nil); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("Rcpt: %v %v", act, err)
	}
	for _, f := range fields {
		if act, err := s.HeaderField(f.name, strings.TrimPrefix(f.value, " ")); err != nil || act.Code != gomilter.ActContinue {
			t.Fatalf("HeaderField: %v %v", act, err)
		}
	}
	if err := s.Macros(gomilter.CodeEOH, "i", "4ABC123"); err != nil {
		t.Fatal(err)
	}
	if act, err := s.HeaderEnd(); err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("HeaderEnd: %v %v", act, err)
	}
	crlf := []byte(strings.ReplaceAll(body, "\n", "\r\n"))
	for len(crlf) > 0 {
		n := min(chunk, len(crlf))
		if act, err := s.BodyChunk(crlf[:n]); err != nil || act.Code != gomilter.ActContinue {
			t.Fatalf("BodyChunk: %v %v", act, err)
		}
		crlf = crlf[n:]
	}
	if err := s.Macros(gomilter.CodeEOB, "i", "4ABC123"); err != nil {
		t.Fatal(err)
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatalf("End: %v", err)
	}
	// Postfix aborts after each message (smtpd's mail_reset): go-milter's
	// session forgets the headers only then.
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	return mods, act
}

// apply edits the message as Postfix's cleanup does with the milter's
// header modifications, and returns it with CRLF line ends. leadSpace says
// whether the milter negotiated the leading-space option (else the MTA
// adds one space after the colon of added headers).
func apply(t testing.TB, msg string, mods []gomilter.ModifyAction, leadSpace bool) string {
	t.Helper()
	fields, body := splitMessage(t, msg)
	for _, m := range mods {
		value := m.HeaderValue
		if !leadSpace {
			value = " " + value
		}
		switch m.Code {
		case gomilter.ActInsertHeader:
			i := min(int(m.HeaderIndex), len(fields))
			fields = append(fields[:i], append([]field{{m.HeaderName, value}}, fields[i:]...)...)
		case gomilter.ActAddHeader:
			fields = append(fields, field{m.HeaderName, value})
		case gomilter.ActChangeHeader:
			n := 0
			for i, f := range fields {
				if !strings.EqualFold(f.name, m.HeaderName) {
					continue
				}
				if n++; n != int(m.HeaderIndex) {
					continue
				}
				if m.HeaderValue == "" {
					fields = append(fields[:i], fields[i+1:]...)
				} else {
					fields[i].value = value
				}
				break
			}
		default:
			t.Fatalf("unexpected modification %q", m.Code)
		}
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(f.name + ":" + f.value + "\n")
	}
	b.WriteString("\n" + body)
	return strings.ReplaceAll(b.String(), "\n", "\r\n")
}

// verifyGo verifies a message with the dkim package.
func (e *env) verifyGo(msg string) []dkim.Result {
	e.t.Helper()
	res, err := dkim.VerifyMessage(context.Background(), strings.NewReader(msg), e.verify)
	if err != nil {
		e.t.Fatalf("VerifyMessage: %v", err)
	}
	return res
}

// pythonVerify is python3-dkim (dkimpy, Debian) verifying every signature
// with its DNS lookups sent to the test server.
const pythonVerify = `
import sys, dns.resolver, dkim
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
dns.resolver.default_resolver = r
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
for i in range(n):
    print("pass" if dkim.DKIM(msg).verify(idx=i) else "fail")
`

// verifyPython returns dkimpy's verdict per signature ("pass"/"fail").
func (e *env) verifyPython(msg string) []string {
	e.t.Helper()
	py := "/usr/bin/python3" // Debian's, where python3-dkim is installed
	if _, err := os.Stat(py); err != nil {
		e.t.Skipf("python3-dkim not available: %v", err)
	}
	_, port, _ := net.SplitHostPort(e.dns.Addr)
	script := filepath.Join(e.t.TempDir(), "verify.py")
	if err := os.WriteFile(script, []byte(pythonVerify), 0o644); err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(py, script, port)
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil && bytes.Contains(out, []byte("ModuleNotFoundError")) {
		e.t.Skipf("python3-dkim not available: %s", out)
	}
	if err != nil {
		e.t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// signMessage signs msg (LF line ends) with keys, returning it with the
// signatures on top, LF line ends: a message signed elsewhere.
func signMessage(t testing.TB, msg string, opts *dkim.SignOptions, keys ...*dkim.Key) string {
	t.Helper()
	var out bytes.Buffer
	kr := dkim.NewKeyring([]dkim.Rule{{Pattern: "*", Key: keys[0]}})
	if _, err := dkim.SignMessage(&out, strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n")), kr, opts); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n")
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// inserted returns the modifications inserting a header named name.
func inserted(mods []gomilter.ModifyAction, name string) []gomilter.ModifyAction {
	var out []gomilter.ModifyAction
	for _, m := range mods {
		if m.Code == gomilter.ActInsertHeader && strings.EqualFold(m.HeaderName, name) {
			out = append(out, m)
		}
	}
	return out
}
