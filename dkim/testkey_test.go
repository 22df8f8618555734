package dkim

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestTestKey(t *testing.T) {
	dir := t.TempDir()
	rk, ek := testKeys(t)
	rsaPath := writeKeyPEM(t, dir, "rsa.pem", rk.Signer, false, 0o600)
	edPath := writeKeyPEM(t, dir, "ed.pem", ek.Signer, false, 0o600)
	other, err := GenerateKey(GenerateOptions{Domain: "example.com", Selector: "other", Dir: dir, Bits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	rsaTXT, _ := recordTXT(rk.Signer.Public())
	edTXT, _ := recordTXT(ek.Signer.Public())
	short := "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKzy/NsE/61s1pdnxHGmaIdCZCl6/DLVUrWG44Xzt9miRjiWTXzHSxlaUuIImY6Ztqbjg5LclELoJ8wHD1fOaYUCAwEAAQ==" // public half of short512PEM
	srv, res := newDNS(t,
		"example.com. 0 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
		zoneTXT("rsa._domainkey.example.com", rsaTXT),
		zoneTXT("ed._domainkey.example.com", edTXT),
		zoneTXT("pkcs1._domainkey.example.com", "v=DKIM1; k=rsa; p="+pkcs1Pub(t, rk)),
		zoneTXT("testing._domainkey.example.com", rsaTXT+"; t=y"),
		zoneTXT("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p="),
		zoneTXT("nop._domainkey.example.com", "v=DKIM1; k=rsa"),
		zoneTXT("badb64._domainkey.example.com", "v=DKIM1; p=!!!!"),
		zoneTXT("badtag._domainkey.example.com", "v=DKIM1; garbage; p=AAAA"),
		zoneTXT("v2._domainkey.example.com", "v=DKIM2; p=AAAA"),
		zoneTXT("sha1._domainkey.example.com", "v=DKIM1; h=sha1; "+strings.TrimPrefix(rsaTXT, "v=DKIM1; h=sha256; ")),
		zoneTXT("short._domainkey.example.com", "v=DKIM1; k=rsa; p="+short),
		zoneTXT("two._domainkey.example.com", rsaTXT),
		zoneTXT("two._domainkey.example.com", edTXT),
		"nodata._domainkey.example.com. 0 IN A 192.0.2.1",
		zoneTXT("broken._domainkey.example.com", rsaTXT),
	)
	srv.Fail("broken._domainkey.example.com", dns.RcodeServerFailure)
	cases := []struct {
		sel, key string
		want     TestKeyFailure
		msg      string
	}{
		{"rsa", rsaPath, 0, ""},
		{"rsa", "", 0, ""},
		{"ed", edPath, 0, ""},
		{"pkcs1", rsaPath, 0, ""},
		{"rsa", other.KeyPath, TestKeyMismatch, "does not match the private key"},
		{"rsa", edPath, TestKeyType, "k=rsa but the private key is ed25519"},
		{"ed", rsaPath, TestKeyType, "k=ed25519 but the private key is rsa"},
		{"testing", rsaPath, TestKeyTesting, "t=y"},
		{"revoked", rsaPath, TestKeyRevoked, "revoked"},
		{"nop", "", TestKeySyntax, "no p= tag"},
		{"badb64", "", TestKeySyntax, "not base64"},
		{"badtag", "", TestKeySyntax, "no '='"},
		{"v2", "", TestKeySyntax, "v=DKIM2"},
		{"sha1", "", TestKeySyntax, "sha256"},
		{"short", "", TestKeyTooShort, "512 bits"},
		{"two", "", TestKeySyntax, "2 TXT records"},
		{"missing", "", TestKeyNXDomain, "NXDOMAIN"},
		{"nodata", "", TestKeyNoRecord, "no TXT record"},
		{"broken", "", TestKeyTempDNS, "try again"},
		{"rsa", dir + "/nonexistent", TestKeyPrivate, "no such file"},
	}
	for _, c := range cases {
		err := TestKey(t.Context(), res, "example.com", c.sel, c.key, LoadOptions{})
		if c.want == 0 {
			if err != nil {
				t.Errorf("%s/%s: %v", c.sel, c.key, err)
			}
			continue
		}
		var te *TestKeyError
		if !errors.As(err, &te) || te.Kind != c.want || !strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), c.sel+"._domainkey.example.com: ") {
			t.Errorf("%s/%s: %v, want kind %d with %q", c.sel, c.key, err, c.want, c.msg)
		}
	}
	srv.Drop("rsa._domainkey.example.com")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	var te *TestKeyError
	if err := TestKey(ctx, res, "example.com", "rsa", "", LoadOptions{}); !errors.As(err, &te) || te.Kind != TestKeyTempDNS {
		t.Errorf("timeout: %v", err)
	}
}

func pkcs1Pub(t *testing.T, k *Key) string {
	t.Helper()
	return base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(k.Signer.Public().(*rsa.PublicKey)))
}
