package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"postgate/internal/dnstest"
	"postgate/internal/resolver"
)

// rfc8463Seed is the Ed25519 key of RFC 8463 appendix A (RFC 8032 §7.1 test 1).
const rfc8463Seed = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
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

func testEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	seed, err := base64.StdEncoding.DecodeString(rfc8463Seed)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// zoneTXT is a zone-file line publishing value at name, cut into strings
// under 255 bytes.
func zoneTXT(name, value string) string {
	var parts []string
	for value != "" {
		n := min(len(value), 200)
		parts = append(parts, fmt.Sprintf("%q", value[:n]))
		value = value[n:]
	}
	return name + ". 0 IN TXT " + strings.Join(parts, " ")
}

// keyRecord returns the zone line for k's public key.
func keyRecord(t testing.TB, k *Key) string {
	t.Helper()
	txt, err := recordTXT(k.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return zoneTXT(k.Selector+"._domainkey."+k.Domain, txt)
}

// newDNS starts a test DNS server with zone and returns it with a resolver
// using it (no cache, so the server's hooks apply to every lookup).
func newDNS(t testing.TB, zone ...string) (*dnstest.Server, resolver.Resolver) {
	t.Helper()
	srv := dnstest.NewServer(t, dnstest.Zone(zone))
	res, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, Timeout: 500 * time.Millisecond, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return srv, res
}

// writeKeyPEM writes signer as PEM to dir/name with mode perm.
func writeKeyPEM(t testing.TB, dir, name string, signer crypto.Signer, pkcs1 bool, perm os.FileMode) string {
	t.Helper()
	var block *pem.Block
	if rk, ok := signer.(*rsa.PrivateKey); ok && pkcs1 {
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}
	} else {
		der, err := x509.MarshalPKCS8PrivateKey(signer)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(block), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// crlf turns LF line breaks into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
