package dkim

import (
	"crypto"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Interoperability with the Debian packages python3-dkim (dkimpy) and
// opendkim, both directions, with keys published on a loopback DNS server
// that the other side queries too.

const pyHelper = `
import sys, dkim, dns.resolver

# argv: MODE DNS-ADDR JOBS-FILE; each job line is tab-separated.
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    r = dns.resolver.Resolver(configure=False)
    host, port = sys.argv[2].rsplit(':', 1)
    r.nameservers = [host]
    r.port = int(port)
    try:
        ans = r.resolve(name, 'TXT', lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    return b''.join(b''.join(rr.strings) for rr in ans)

mode = sys.argv[1]
for job in open(sys.argv[3]).read().splitlines():
    args = job.split('\t')
    msg = open(args[0], 'rb').read()
    if mode == 'verify':
        # job: MSGFILE NSIGS -> prints "MSGFILE 0:pass 1:fail ..."
        d = dkim.DKIM(msg)
        res = ['%d:%s' % (i, 'pass' if d.verify(idx=i, dnsfunc=dnsfunc) else 'fail') for i in range(int(args[1]))]
        print(args[0], ' '.join(res))
    elif mode == 'sign':
        # job: MSGFILE OUTFILE SELECTOR DOMAIN KEYFILE HCANON BCANON ALG -> signature in OUTFILE
        out, sel, dom, keyfile, hc, bc, alg = args[1:8]
        sig = dkim.sign(msg, sel.encode(), dom.encode(), open(keyfile, 'rb').read(),
                        canonicalize=(hc.encode(), bc.encode()),
                        signature_algorithm=alg.encode(),
                        include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
        open(out, 'wb').write(sig)
`

// runPython runs the helper once over all jobs (starting dkimpy is slow).
func runPython(t *testing.T, py, script, mode, dnsAddr string, jobs [][]string) string {
	t.Helper()
	var b strings.Builder
	for _, j := range jobs {
		b.WriteString(strings.Join(j, "\t") + "\n")
	}
	jf := filepath.Join(t.TempDir(), "jobs")
	if err := os.WriteFile(jf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, script, mode, dnsAddr, jf).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("dkimpy %s: %v: %s", mode, err, ee.Stderr)
		}
		t.Fatalf("dkimpy %s: %v", mode, err)
	}
	return string(out)
}

// python returns the interpreter with dkimpy and dnspython, or skips.
func python(t *testing.T) (string, string) {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		p, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(p, "-c", "import dkim, dns.resolver").Run() == nil {
			script := filepath.Join(t.TempDir(), "pydkim.py")
			if err := os.WriteFile(script, []byte(pyHelper), 0o600); err != nil {
				t.Fatal(err)
			}
			return p, script
		}
	}
	t.Skip("python3 with dkim (Debian python3-dkim) and dns (python3-dnspython) not installed")
	return "", ""
}

func TestInteropGoSignsDkimpyVerifies(t *testing.T) {
	py, script := python(t)
	rk, ek := testKeys(t)
	srv, _ := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	dir := t.TempDir()
	var jobs [][]string
	want := map[string]string{}
	n := 0
	for _, c := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"} {
		for name, msg := range edgeMessages {
			sigs := signString(t, []*Key{rk, ek}, msg, &SignOptions{Canonicalization: c}, 13)
			n++
			f := filepath.Join(dir, fmt.Sprintf("msg%d", n))
			if err := os.WriteFile(f, []byte(prepend(sigs, msg)), 0o600); err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, []string{f, "2"})
			want[f] = c + " " + name
		}
	}
	out := runPython(t, py, script, "verify", srv.Addr, jobs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(jobs) {
		t.Fatalf("dkimpy answered %d of %d: %s", len(lines), len(jobs), out)
	}
	for _, l := range lines {
		f, res, _ := strings.Cut(l, " ")
		if res != "0:pass 1:pass" {
			t.Errorf("%s: dkimpy says %q", want[f], res)
		}
	}
}

func TestInteropDkimpySignsGoVerifies(t *testing.T) {
	py, script := python(t)
	rk, ek := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	dir := t.TempDir()
	rsaFile := writeKeyPEM(t, dir, "rsa.pem", rk.Signer, true, 0o600)
	edFile := filepath.Join(dir, "ed.key") // dkimpy's raw base64 format
	if err := os.WriteFile(edFile, []byte(rfc8463Seed), 0o600); err != nil {
		t.Fatal(err)
	}
	type job struct{ name, msg, rsaSig, edSig string }
	var jobs []job
	var pyJobs [][]string
	for _, c := range [][2]string{{"relaxed", "relaxed"}, {"simple", "simple"}, {"relaxed", "simple"}} {
		for name, msg := range edgeMessages {
			if name == "no body separator" {
				continue // dkimpy needs the blank line
			}
			j := job{name: c[0] + "/" + c[1] + " " + name, msg: msg}
			f := filepath.Join(dir, fmt.Sprintf("msg%d", len(jobs)))
			j.rsaSig, j.edSig = f+".rsa", f+".ed"
			if err := os.WriteFile(f, []byte(msg), 0o600); err != nil {
				t.Fatal(err)
			}
			pyJobs = append(pyJobs,
				[]string{f, j.rsaSig, "rsa2048", "example.com", rsaFile, c[0], c[1], "rsa-sha256"},
				[]string{f, j.edSig, "ed", "example.com", edFile, c[0], c[1], "ed25519-sha256"})
			jobs = append(jobs, j)
		}
	}
	runPython(t, py, script, "sign", "127.0.0.1:53", pyJobs)
	for _, j := range jobs {
		rsaSig, err1 := os.ReadFile(j.rsaSig)
		edSig, err2 := os.ReadFile(j.edSig)
		if err1 != nil || err2 != nil {
			t.Fatalf("%v %v", err1, err2)
		}
		results := verifyString(t, res, string(rsaSig)+string(edSig)+j.msg, nil, 11)
		if len(results) != 2 {
			t.Fatalf("%d results", len(results))
		}
		for _, r := range results {
			if r.Status != StatusPass {
				t.Errorf("%s: %s signature: %s %v", j.name, r.Algorithm, r.Status, r.Err)
			}
		}
	}
	// The dkimpy key file loads as a postgate key.
	k, err := LoadKey(edFile, "example.com", "ed", LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(ek.Signer.Public()) {
		t.Error("dkimpy Ed25519 key file loads as another key")
	}
}

// opendkimMessages are edgeMessages as opendkim -t can take them: it refuses
// a body without a final CRLF ("CRLF at end of body missing"), and its
// file reader drops the whitespace after "Name:" beyond one space (as a
// milter without the leading-space option sees it), which breaks simple
// header canonicalization for any signer; so that one header is normalized.
func opendkimMessages() map[string]string {
	out := map[string]string{}
	for name, msg := range edgeMessages {
		switch name {
		case "no body separator", "body without final newline":
			continue
		case "trailing whitespace":
			msg = strings.Replace(msg, "Subject:   ", "Subject: ", 1)
		}
		out[name] = msg
	}
	return out
}

// opendkimConf writes an opendkim.conf for test mode (-t) in dir.
func opendkimConf(t *testing.T, dir string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, "opendkim.conf")
	base := []string{"Syslog no", "RequireSafeKeys false"}
	if err := os.WriteFile(p, []byte(strings.Join(append(base, lines...), "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func opendkimBin(t *testing.T) string {
	p, err := exec.LookPath("opendkim")
	if err != nil {
		if p, err = exec.LookPath("/usr/sbin/opendkim"); err != nil {
			t.Skip("opendkim not installed (Debian package opendkim)")
		}
	}
	return p
}

func TestInteropOpenDKIMSignsGoVerifies(t *testing.T) {
	bin := opendkimBin(t)
	rk, ek := testKeys(t)
	_, res := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	dir := t.TempDir()
	keys := []struct{ sel, file, alg string }{
		{"rsa2048", writeKeyPEM(t, dir, "rsa.private", rk.Signer, false, 0o600), "rsa-sha256"},
		{"ed", writeKeyPEM(t, dir, "ed.private", ek.Signer, false, 0o600), "ed25519-sha256"},
	}
	// Relaxed header canonicalization only: with simple, opendkim -t hashes
	// its own DKIM-Signature with bare-LF folds, so the CRLF form of the
	// message fails in every verifier (dkimpy too); only the LF form passes.
	for _, c := range []string{"relaxed/relaxed", "relaxed/simple"} {
		for _, k := range keys {
			conf := opendkimConf(t, dir, "Mode s", "Domain example.com", "Selector "+k.sel, "KeyFile "+k.file,
				"SignatureAlgorithm "+k.alg, "Canonicalization "+c, "OversignHeaders From")
			for name, msg := range opendkimMessages() {
				f := filepath.Join(dir, "msg.eml")
				if err := os.WriteFile(f, []byte(msg), 0o600); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(bin, "-x", conf, "-t", f).CombinedOutput()
				if err != nil {
					t.Fatalf("opendkim -t: %v: %s", err, out)
				}
				sig := opendkimSignature(string(out))
				if sig == "" {
					t.Fatalf("%s %s %s: no signature in %q", c, k.alg, name, out)
				}
				results := verifyString(t, res, crlf(sig)+msg, nil, 9)
				if len(results) != 1 || results[0].Status != StatusPass || results[0].Algorithm != k.alg {
					t.Errorf("%s %s %s: %+v\n%s", c, k.alg, name, results, sig)
				}
			}
		}
	}
}

// opendkimSignature cuts the DKIM-Signature field (LF line breaks) out of
// opendkim -t output.
func opendkimSignature(out string) string {
	i := strings.Index(out, "DKIM-Signature:")
	if i < 0 {
		return ""
	}
	var b strings.Builder
	for n, line := range strings.Split(out[i:], "\n") {
		if n > 0 && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			break
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// TestInteropGoSignsOpenDKIMVerifies runs opendkim in test mode with an
// Unbound configuration that forwards every query to the loopback server.
func TestInteropGoSignsOpenDKIMVerifies(t *testing.T) {
	bin := opendkimBin(t)
	rk, ek := testKeys(t)
	srv, _ := newDNS(t, keyRecord(t, rk), keyRecord(t, ek))
	dir := t.TempDir()
	host, port, _ := strings.Cut(srv.Addr, ":")
	unbound := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(unbound, []byte(fmt.Sprintf("server:\n\tdo-not-query-localhost: no\n\tmodule-config: \"iterator\"\nforward-zone:\n\tname: \".\"\n\tforward-addr: %s@%s\n", host, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := opendkimConf(t, dir, "Mode v", "ResolverConfiguration "+unbound, "AlwaysAddARHeader yes", "AuthservID test.invalid")
	for _, c := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple"} {
		for name, msg := range opendkimMessages() {
			sigs := signString(t, []*Key{rk, ek}, msg, &SignOptions{Canonicalization: c}, 17)
			f := filepath.Join(dir, "msg.eml")
			if err := os.WriteFile(f, []byte(prepend(sigs, msg)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "-vv", "-x", conf, "-t", f).CombinedOutput()
			if err != nil {
				t.Fatalf("opendkim -t: %v: %s", err, out)
			}
			if strings.Count(string(out), "dkim=pass") != 2 || !strings.Contains(string(out), "header.a=ed25519-sha256 header.s=ed") {
				t.Errorf("%s %s: opendkim says:\n%s", c, name, out)
			}
		}
	}
}

// TestInteropTestkey: a key made by GenerateKey passes opendkim-testkey
// (against the loopback DNS server), and a key made by opendkim-genkey
// passes TestKey.
func TestInteropTestkey(t *testing.T) {
	testkey, err := exec.LookPath("opendkim-testkey")
	if err != nil {
		t.Skip("opendkim-testkey not installed (Debian package opendkim-tools)")
	}
	genkey, err := exec.LookPath("opendkim-genkey")
	if err != nil {
		t.Skip("opendkim-genkey not installed (Debian package opendkim-tools)")
	}
	dir := t.TempDir()
	ours, err := GenerateKey(GenerateOptions{Domain: "example.com", Selector: "ours", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(genkey, "-d", "example.com", "-s", "theirs", "-D", dir).CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v: %s", err, out)
	}
	theirs, err := os.ReadFile(filepath.Join(dir, "theirs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var theirTXT strings.Builder
	for i, part := range strings.Split(string(theirs), "\"") {
		if i%2 == 1 {
			theirTXT.WriteString(part)
		}
	}
	srv, res := newDNS(t,
		zoneTXT("ours._domainkey.example.com", ours.TXT),
		zoneTXT("theirs._domainkey.example.com", theirTXT.String()),
	)
	if err := TestKey(t.Context(), res, "example.com", "theirs", filepath.Join(dir, "theirs.private"), LoadOptions{}); err != nil {
		t.Errorf("TestKey on opendkim-genkey's key: %v", err)
	}
	host, port, _ := strings.Cut(srv.Addr, ":")
	unbound := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(unbound, []byte(fmt.Sprintf("server:\n\tdo-not-query-localhost: no\n\tmodule-config: \"iterator\"\nforward-zone:\n\tname: \".\"\n\tforward-addr: %s@%s\n", host, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := opendkimConf(t, dir, "ResolverConfiguration "+unbound)
	out, err := exec.Command(testkey, "-x", conf, "-d", "example.com", "-s", "ours", "-k", ours.KeyPath, "-vvv").CombinedOutput()
	t.Logf("opendkim-testkey: %s", out)
	if err != nil || !strings.Contains(string(out), "key OK") {
		t.Errorf("opendkim-testkey on GenerateKey's key: %v:\n%s", err, out)
	}
	// And it notices a mismatch, as TestKey does.
	out, err = exec.Command(testkey, "-x", conf, "-d", "example.com", "-s", "ours", "-k", filepath.Join(dir, "theirs.private")).CombinedOutput()
	if err == nil && strings.Contains(string(out), "key OK") {
		t.Errorf("opendkim-testkey accepted the wrong private key:\n%s", out)
	}
	if err := TestKey(t.Context(), res, "example.com", "ours", filepath.Join(dir, "theirs.private"), LoadOptions{}); err == nil {
		t.Error("TestKey accepted the wrong private key")
	}
}
