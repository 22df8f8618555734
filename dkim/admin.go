package dkim

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"postgate/internal/resolver"
)

// GenerateOptions says what key GenerateKey makes.
type GenerateOptions struct {
	Domain   string
	Selector string
	Dir      string // default "."
	Type     string // "rsa" (default) or "ed25519"
	Bits     int    // RSA only: default 2048, at least MinRSABits
}

// GeneratedKey describes the files GenerateKey wrote.
type GeneratedKey struct {
	KeyPath     string // DIR/SELECTOR.private: PKCS#8 PEM, mode 0600
	RecordPath  string // DIR/SELECTOR.txt
	Record      string // contents of SELECTOR.txt: the zone-file line
	TXT         string // the TXT value to publish, "v=DKIM1; ... p=..."
	KeyListLine string // "*@DOMAIN:DOMAIN:/abs/DIR/SELECTOR"
}

// GenerateKey makes a key pair like opendkim-genkey: SELECTOR.private (PKCS#8
// PEM, as opendkim-genkey writes with OpenSSL 3; mode 0600) and SELECTOR.txt
// with the record in zone-file syntax, the key cut into strings shorter than
// 255 bytes. Existing files are never overwritten.
func GenerateKey(opts GenerateOptions) (*GeneratedKey, error) {
	if err := checkDomain(opts.Domain); err != nil {
		return nil, err
	}
	if err := checkSelector(opts.Selector); err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		dir = "."
	}
	var priv crypto.Signer
	switch opts.Type {
	case "", "rsa":
		bits := opts.Bits
		if bits == 0 {
			bits = 2048
		}
		if bits < MinRSABits {
			return nil, fmt.Errorf("RSA keys need at least %d bits, not %d", MinRSABits, bits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, err
		}
		priv = k
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		priv = k
	default:
		return nil, fmt.Errorf("key type %q: want rsa or ed25519", opts.Type)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	txt, err := recordTXT(priv.Public())
	if err != nil {
		return nil, err
	}
	g := &GeneratedKey{
		KeyPath:    filepath.Join(dir, opts.Selector+".private"),
		RecordPath: filepath.Join(dir, opts.Selector+".txt"),
		TXT:        txt,
		Record:     zoneRecord(opts.Domain, opts.Selector, priv.Public()),
	}
	abs, err := filepath.Abs(filepath.Join(dir, opts.Selector))
	if err != nil {
		return nil, err
	}
	g.KeyListLine = "*@" + strings.ToLower(opts.Domain) + ":" + strings.ToLower(opts.Domain) + ":" + abs
	for _, p := range []string{g.KeyPath, g.RecordPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s already exists: not overwriting a key", p)
		}
	}
	if err := writeNew(g.KeyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(g.RecordPath, []byte(g.Record), 0o644); err != nil {
		os.Remove(g.KeyPath)
		return nil, err
	}
	return g, nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Chmod(perm); err != nil { // the umask may have narrowed it; never widen beyond perm
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// recordTXT is the TXT value published for pub.
func recordTXT(pub crypto.PublicKey) (string, error) {
	p, err := publicKeyRecord(pub)
	if err != nil {
		return "", err
	}
	return recordPrefix(pub) + "p=" + p, nil
}

func recordPrefix(pub crypto.PublicKey) string {
	if keyType(pub) == "rsa" {
		return "v=DKIM1; h=sha256; k=rsa; "
	}
	return "v=DKIM1; k=ed25519; "
}

// zoneRecord writes the record the way opendkim-genkey does.
func zoneRecord(domain, selector string, pub crypto.PublicKey) string {
	p, _ := publicKeyRecord(pub)
	var b strings.Builder
	fmt.Fprintf(&b, "%s._domainkey\tIN\tTXT\t( %q", selector, recordPrefix(pub))
	first := true
	for p != "" {
		n := min(len(p), 250)
		chunk := p[:n]
		if first {
			chunk = "p=" + chunk
			first = false
		}
		fmt.Fprintf(&b, "\n\t  %q", chunk)
		p = p[n:]
	}
	fmt.Fprintf(&b, " )  ; ----- DKIM key %s for %s\n", selector, strings.ToLower(domain))
	return b.String()
}

// TestKeyFailure says what is wrong with a published key.
type TestKeyFailure int

// The ways TestKey can fail.
const (
	TestKeyNoRecord TestKeyFailure = iota + 1 // the name exists, no TXT record (or an empty answer)
	TestKeyNXDomain                           // the name does not exist
	TestKeyTempDNS                            // DNS failed (SERVFAIL, timeout...): try again
	TestKeySyntax                             // the record is not a usable DKIM key record
	TestKeyRevoked                            // p= is empty
	TestKeyType                               // k= is not the type of the private key
	TestKeyMismatch                           // the public key is not the private key's
	TestKeyTesting                            // t=y: verifiers treat signed mail as unsigned
	TestKeyTooShort                           // RSA key under MinRSABits
	TestKeyPrivate                            // the private key file cannot be used
)

// TestKeyError is a TestKey failure: Kind for programs, Error() for admins.
type TestKeyError struct {
	Kind TestKeyFailure
	Name string // the record name queried
	Msg  string
}

func (e *TestKeyError) Error() string { return e.Name + ": " + e.Msg }

// TestKey fetches SELECTOR._domainkey.DOMAIN through res and checks it, and
// when keyfile is not empty, that it is the public half of that private key.
// nil means "key OK" (what opendkim-testkey prints).
func TestKey(ctx context.Context, res resolver.Resolver, domain, selector, keyfile string, opts LoadOptions) error {
	name := selector + "._domainkey." + strings.TrimSuffix(domain, ".")
	fail := func(kind TestKeyFailure, format string, args ...any) error {
		return &TestKeyError{Kind: kind, Name: name, Msg: fmt.Sprintf(format, args...)}
	}
	var priv crypto.Signer
	if keyfile != "" {
		var err error
		if priv, err = readKeyFile(keyfile, opts); err != nil {
			return fail(TestKeyPrivate, "private key: %v", err)
		}
	}
	txts, err := res.LookupTXT(ctx, name)
	var de *net.DNSError
	switch {
	case err == nil:
	case errors.As(err, &de) && de.IsNotFound && de.Err == resolver.ErrNoSuchHost:
		return fail(TestKeyNXDomain, "no such name (NXDOMAIN): is the record published, under this selector and domain?")
	case errors.As(err, &de) && de.IsNotFound:
		return fail(TestKeyNoRecord, "the name exists but has no TXT record")
	default:
		return fail(TestKeyTempDNS, "DNS lookup failed, try again later: %v", err)
	}
	switch len(txts) {
	case 0:
		return fail(TestKeyNoRecord, "the name exists but has no TXT record")
	case 1:
	default:
		return fail(TestKeySyntax, "%d TXT records: there must be exactly one key record", len(txts))
	}
	tags, err := parseKeyRecord(txts[0])
	if err != nil {
		return fail(TestKeySyntax, "%v in %q", err, txts[0])
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return fail(TestKeySyntax, "v=%s: want v=DKIM1", v)
	}
	if h, ok := tags["h"]; ok && !containsFold(strings.Split(stripFWS(h), ":"), "sha256") {
		return fail(TestKeySyntax, "h=%s does not allow sha256", h)
	}
	if s, ok := tags["s"]; ok {
		svc := strings.Split(stripFWS(s), ":")
		if !containsFold(svc, "email") && !containsFold(svc, "*") {
			return fail(TestKeySyntax, "s=%s: the key is not for email", s)
		}
	}
	p, ok := tags["p"]
	if !ok {
		return fail(TestKeySyntax, "no p= tag")
	}
	p = stripFWS(p)
	if p == "" {
		return fail(TestKeyRevoked, "key revoked (empty p=)")
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return fail(TestKeySyntax, "p= is not base64: %v", err)
	}
	k := strings.ToLower(stripFWS(tags["k"]))
	if k == "" {
		k = "rsa"
	}
	if priv != nil && k != keyType(priv.Public()) {
		return fail(TestKeyType, "k=%s but the private key is %s", k, keyType(priv.Public()))
	}
	var pub crypto.PublicKey
	switch k {
	case "rsa":
		key, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			key, err = x509.ParsePKCS1PublicKey(raw)
		}
		if err != nil {
			return fail(TestKeySyntax, "p= is not an RSA public key: %v", err)
		}
		rk, ok := key.(*rsa.PublicKey)
		if !ok {
			return fail(TestKeyType, "k=rsa but p= holds a %s key", keyType(key))
		}
		if bits := rk.N.BitLen(); bits < MinRSABits {
			return fail(TestKeyTooShort, "RSA key of %d bits: verifiers refuse keys under %d bits", bits, MinRSABits)
		}
		pub = rk
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return fail(TestKeySyntax, "Ed25519 p= has %d bytes, want %d", len(raw), ed25519.PublicKeySize)
		}
		pub = ed25519.PublicKey(raw)
	default:
		return fail(TestKeyType, "unsupported key type k=%s", k)
	}
	if priv != nil {
		if eq, ok := priv.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
			return fail(TestKeyMismatch, "the published public key does not match the private key %s", keyfile)
		}
	}
	if t, ok := tags["t"]; ok && containsFold(strings.Split(stripFWS(t), ":"), "y") {
		return fail(TestKeyTesting, "t=y: the domain is testing DKIM, verifiers treat its signed mail as unsigned; remove t=y when done")
	}
	return nil
}

// parseKeyRecord splits a key record's tag list (RFC 6376 §3.6.1).
func parseKeyRecord(s string) (map[string]string, error) {
	tags := map[string]string{}
	for _, spec := range strings.Split(s, ";") {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		name, val, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("tag %q has no '='", strings.TrimSpace(spec))
		}
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, errors.New("empty tag name")
		}
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("duplicate tag %s=", name)
		}
		tags[name] = strings.TrimSpace(val)
	}
	return tags, nil
}

// maxHeaderBytes bounds the header SignMessage/VerifyMessage hold in memory.
const maxHeaderBytes = 1 << 20

// readFields reads a message header from br into fields, keeping each value
// byte for byte. It returns whether the header lines ended in a bare LF.
func readFields(br *bufio.Reader) (fields []Field, lf bool, err error) {
	total := 0
	first := true
	for {
		line, err := br.ReadString('\n')
		total += len(line)
		if total > maxHeaderBytes {
			return nil, false, fmt.Errorf("message header over %d bytes", maxHeaderBytes)
		}
		if err != nil && err != io.EOF {
			return nil, false, err
		}
		if first && strings.HasSuffix(line, "\n") {
			lf = !strings.HasSuffix(line, "\r\n")
			first = false
		}
		content := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if content == "" {
			return fields, lf, nil // blank line or end of input: end of header
		}
		if content[0] == ' ' || content[0] == '\t' {
			if len(fields) == 0 {
				return nil, false, errors.New("message starts with a continuation line")
			}
			fields[len(fields)-1].Value += "\r\n" + content
		} else {
			name, value, ok := strings.Cut(content, ":")
			if !ok || name == "" || strings.ContainsAny(name, " \t") && strings.TrimRight(name, " \t") == "" {
				return nil, false, fmt.Errorf("malformed header line %.40q", content)
			}
			fields = append(fields, Field{Name: name, Value: value})
		}
		if err == io.EOF {
			return fields, lf, nil
		}
	}
}

// SignMessage signs the whole message read from r with the keys kr has for
// its author, and writes the signature fields followed by the message to w
// (with LF line breaks if the message uses them). r is read twice when it is
// an io.Seeker (a file), else held in memory. ErrNoKey: no key for the author.
func SignMessage(w io.Writer, r io.Reader, kr *Keyring, opts *SignOptions) ([]Signature, error) {
	var start int64
	seeker, seekable := r.(io.ReadSeeker)
	if seekable {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seekable = false
		}
	}
	var copyBuf *bytes.Buffer
	src := r
	if !seekable {
		copyBuf = &bytes.Buffer{}
		src = io.TeeReader(r, copyBuf)
	}
	br := bufio.NewReader(src)
	fields, lf, err := readFields(br)
	if err != nil {
		return nil, err
	}
	author, err := Author(fields)
	if err != nil {
		return nil, err
	}
	keys := kr.Lookup(author)
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: %w", author, ErrNoKey)
	}
	s, err := NewSigner(keys, fields, opts)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(s, br); err != nil {
		s.Abort()
		return nil, err
	}
	sigs, err := s.Close()
	if err != nil {
		return nil, err
	}
	for _, sig := range sigs {
		text := sig.String()
		if lf {
			text = strings.ReplaceAll(text, "\r\n", "\n")
		}
		if _, err := io.WriteString(w, text); err != nil {
			return nil, err
		}
	}
	if seekable {
		if _, err := seeker.Seek(start, io.SeekStart); err != nil {
			return nil, err
		}
		_, err = io.Copy(w, seeker)
	} else {
		_, err = io.Copy(w, copyBuf)
	}
	return sigs, err
}

// VerifyMessage checks every DKIM signature (up to MaxVerifications) of the
// whole message read from r. No results means the message is unsigned.
func VerifyMessage(ctx context.Context, r io.Reader, opts *VerifyOptions) ([]Result, error) {
	br := bufio.NewReader(r)
	fields, _, err := readFields(br)
	if err != nil {
		return nil, err
	}
	v, err := NewVerifier(ctx, fields, opts)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(v, br); err != nil {
		v.Abort()
		return nil, err
	}
	return v.Close()
}
