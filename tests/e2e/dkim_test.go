package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"postgate/internal/dnstest"
)

// lookupTXT asks the test DNS server, as any verifier would, and joins the
// strings of the first TXT record.
func (e *env) lookupTXT(name string) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	in, _, err := c.Exchange(m, e.dns.Addr)
	if err != nil {
		return "", err
	}
	for _, rr := range in.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			return strings.Join(txt.Txt, ""), nil
		}
	}
	return "", fmt.Errorf("no TXT record for %s (rcode %s)", name, dns.RcodeToString[in.Rcode])
}

// pyVerify is the independent verifier: dkimpy (python3-dkim), with the key
// record fetched from the test DNS handed to it for exactly that name.
const pyVerify = `import sys, dkim
msg = open(sys.argv[1], 'rb').read()
name, txt = sys.argv[2].encode(), sys.argv[3].encode()
def dnsfunc(qname, timeout=5):
    return txt if qname.rstrip(b'.').lower() == name.lower() else None
d = dkim.DKIM(msg)
ok = d.verify(dnsfunc=dnsfunc)
print('dkimpy verify:', ok, d.domain, d.selector)
sys.exit(0 if ok else 1)
`

// pythonWithDKIM finds a python3 that has python3-dkim: Debian's own first
// (a pyenv or venv python3 earlier in PATH does not see Debian's modules).
func pythonWithDKIM() (string, error) {
	var tried []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		out, err := run(30*time.Second, os.TempDir(), py, "-c", "import dkim")
		if err == nil {
			return py, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v %s", py, err, strings.TrimSpace(out)))
	}
	return "", fmt.Errorf("no python3 with python3-dkim (Debian package python3-dkim): %s", strings.Join(tried, "; "))
}

// pythonVerify checks with python3-dkim that data carries a valid
// signature by selector/domain, whose key it gets from the test DNS.
func (e *env) pythonVerify(data []byte, selector, domain string) error {
	name := selector + "._domainkey." + domain
	txt, err := e.lookupTXT(name)
	if err != nil {
		return fmt.Errorf("published key record: %v", err)
	}
	py, err := pythonWithDKIM()
	if err != nil {
		return err
	}
	f := e.path("msgs", "verify-"+token("py")+".eml")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(f, data, 0o644); err != nil {
		return err
	}
	// Run outside the module root: its dkim/ directory would shadow the
	// python module.
	out, err := run(60*time.Second, e.dir, py, "-c", pyVerify, f, name, txt)
	if err != nil {
		return fmt.Errorf("python3-dkim does not verify the signature (%v): %s", err, strings.TrimSpace(out))
	}
	return nil
}

func (s *sc) pythonVerify(m *delivered, selector, domain string) {
	s.Helper()
	if err := s.e.pythonVerify(m.Data, selector, domain); err != nil {
		s.fail("%v\n%s", err, m.headerBlock())
	}
}

// ourSignatures returns the DKIM-Signature headers with d= our domain.
func ourSignatures(m *delivered) []string {
	var out []string
	for _, v := range m.header()["Dkim-Signature"] {
		for _, tag := range strings.Split(v, ";") {
			k, val, _ := strings.Cut(strings.TrimSpace(tag), "=")
			if k == "d" && strings.EqualFold(strings.TrimSpace(val), ourDomain) {
				out = append(out, v)
			}
		}
	}
	return out
}

func scenarioDKIMOutbound(s *sc) {
	s.needs("dkim", "milter")
	e := s.e
	tok := token("dkim-out")
	to := "friend@remote.example"
	r := s.send(sendOpts{port: e.subPort, auth: true, from: authUser, to: to, token: tok,
		data: simpleMessage(authUser, to, tok)})
	if !r.accepted {
		s.fail("submission: %v\n%s", r, r.out)
	}
	m := s.delivered(tok)
	sigs := ourSignatures(m)
	if len(sigs) == 0 {
		s.fail("submitted message has no DKIM-Signature with d=%s:\n%s", ourDomain, m.headerBlock())
	}
	s.check(strings.Contains(strings.Join(strings.Fields(sigs[0]), ""), "s="+e.dkimSelector), "signature does not use selector %s: %s", e.dkimSelector, sigs[0])
	s.pythonVerify(m, e.dkimSelector, ourDomain)
}

func scenarioDKIMNoOracle(s *sc) {
	s.needs("dkim", "milter")
	e := s.e
	tok := token("dkim-oracle")
	o := e.mxFrom(whitelistedClient, "forger@remote.example", "bob@example.org")
	o.token = tok
	o.data = simpleMessage(authUser, "bob@example.org", tok) // From: our domain
	r := s.send(o)
	if !r.accepted {
		s.fail("port-25 message from an external client: want accepted, got %v", r)
	}
	m := s.delivered(tok)
	s.check(len(ourSignatures(m)) == 0, "an external client got a message From: our domain signed by us (signing oracle):\n%s", m.headerBlock())
}

// foreignSigner is a sending domain elsewhere, with its key published in
// the test DNS.
type foreignSigner struct {
	domain, selector string
	key              *rsa.PrivateKey
}

func (e *env) newForeignSigner() (*foreignSigner, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	f := &foreignSigner{domain: "foreign.e2e.example", selector: "fsel", key: key}
	txt := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	var parts []string
	for len(txt) > 200 {
		parts = append(parts, `"`+txt[:200]+`"`)
		txt = txt[200:]
	}
	parts = append(parts, `"`+txt+`"`)
	e.dns.Add(fmt.Sprintf("%s._domainkey.%s. 60 IN TXT %s", f.selector, f.domain, strings.Join(parts, " ")))
	return f, nil
}

func (f *foreignSigner) sign(msg string) (string, error) {
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{
		Domain:                 f.domain,
		Selector:               f.selector,
		Signer:                 f.key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID"},
	})
	return b.String(), err
}

// authResults returns the Authentication-Results headers whose authserv-id
// is id ("" = any).
func authResults(m *delivered, id string) []string {
	var out []string
	for _, v := range m.header()["Authentication-Results"] {
		got, _, _ := strings.Cut(strings.TrimSpace(v), ";")
		if id == "" || strings.EqualFold(strings.TrimSpace(got), id) {
			out = append(out, v)
		}
	}
	return out
}

func scenarioDKIMInbound(s *sc) {
	s.needs("dkim", "milter")
	e := s.e
	f, err := e.newForeignSigner()
	if err != nil {
		s.fail("%v", err)
	}
	sendSigned := func(name string, mangle func(string) string) *delivered {
		s.Helper()
		tok := token(name)
		msg, err := f.sign(simpleMessage("news@"+f.domain, "bob@example.org", tok))
		if err != nil {
			s.fail("sign: %v", err)
		}
		o := e.mxFrom(whitelistedClient, "news@"+f.domain, "bob@example.org")
		o.token, o.data = tok, mangle(msg)
		r := s.send(o)
		if !r.accepted {
			s.fail("%s: want accepted, got %v", name, r)
		}
		return s.delivered(tok)
	}

	// A correctly signed message: dkim=pass from our authserv-id.
	m := sendSigned("dkim-in-good", func(m string) string { return m })
	var passAR string
	for _, ar := range authResults(m, "") {
		if strings.Contains(ar, "dkim=pass") {
			passAR = ar
		}
	}
	if passAR == "" {
		s.fail("signed message: no Authentication-Results with dkim=pass:\n%s", m.headerBlock())
	}
	authserv, _, _ := strings.Cut(strings.TrimSpace(passAR), ";")
	authserv = strings.TrimSpace(authserv)
	s.check(strings.Contains(passAR, "header.d="+f.domain), "dkim=pass result does not name header.d=%s: %q", f.domain, passAR)
	if want, ok := e.section("dkim")["authserv_id"].(string); ok && want != "" {
		s.check(authserv == want, "authserv-id %q, configured %q", authserv, want)
	}

	// A tampered copy: dkim=fail.
	m = sendSigned("dkim-in-tampered", func(m string) string {
		return strings.Replace(m, "Hello from the postgate e2e test.", "Hello from a tampered copy.", 1)
	})
	ars := authResults(m, authserv)
	s.check(len(ars) == 1 && strings.Contains(ars[0], "dkim=fail"), "tampered message: want one A-R %s with dkim=fail, got %q", authserv, ars)

	// A forged Authentication-Results with our authserv-id is removed.
	forged := "Authentication-Results: " + authserv + "; dkim=pass header.d=forged-marker.example\r\n"
	m = sendSigned("dkim-in-forged", func(m string) string { return forged + m })
	s.check(!strings.Contains(m.headerBlock(), "forged-marker.example"), "forged Authentication-Results %q survived:\n%s", authserv, m.headerBlock())
	ars = authResults(m, authserv)
	s.check(len(ars) == 1 && strings.Contains(ars[0], "dkim=pass"), "message with a forged A-R: want exactly our one dkim=pass A-R, got %q", ars)
}

// TestPythonVerifier checks the DKIM scenarios' tools against each other
// without Postfix: a go-msgauth signature over a key published in the test
// DNS verifies with python3-dkim, and a tampered copy does not.
func TestPythonVerifier(t *testing.T) {
	if _, err := pythonWithDKIM(); err != nil {
		t.Skip(err)
	}
	e := &env{t: t, dir: t.TempDir(), dns: dnstest.NewServer(t, baseZone())}
	f, err := e.newForeignSigner()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := f.sign(simpleMessage("news@"+f.domain, "bob@example.org", "tok"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data string
		ok   bool
	}{
		{"signed", msg, true},
		{"tampered", strings.Replace(msg, "Hello", "Jello", 1), false},
	} {
		err := e.pythonVerify([]byte(c.data), f.selector, f.domain)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "does not verify")) {
			t.Errorf("%s: python3-dkim: %v, want verified=%v", c.name, err, c.ok)
		}
	}
}
