package dkim

import (
	"crypto/ed25519"
	"crypto/rsa"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// short512PEM is a 512-bit RSA key (openssl genrsa -traditional 512).
const short512PEM = `-----BEGIN RSA PRIVATE KEY-----
MIIBOgIBAAJBAKzy/NsE/61s1pdnxHGmaIdCZCl6/DLVUrWG44Xzt9miRjiWTXzH
SxlaUuIImY6Ztqbjg5LclELoJ8wHD1fOaYUCAwEAAQJANQAyJRyfDhKwoK2YMgwB
NJJQB7Y824csVZ0E1OQfj33+dYzCsc4L1lwmFOk+HziaZXjSDCpC8gs1JcIWpKzW
8QIhANSu5SPn8fKpx8CkF9Ih2yobos6ovPh2eRnu3BQMEB8zAiEA0Cxl2msrIjuR
MGL3AvhpLZTzNt1sjr4HQdtxsaMWtGcCIF690iEej67zZqIv9tSKdGDbkrjQfe2I
iQW+W5cqkHv1AiEAlLrTvlyJAbk7Py3FuzqNssJTjiRe1hEQkE3figGyTAsCICK8
zzBjIkGd6La23PBun5FgY9mK6QOz/ZI9rWo3ju72
-----END RSA PRIVATE KEY-----
`

func TestParsePrivateKeyFormats(t *testing.T) {
	dir := t.TempDir()
	rk := testRSA(t)
	ek := testEd25519(t)
	cases := []struct {
		name string
		path string
		want any
	}{
		{"rsa pkcs1", writeKeyPEM(t, dir, "p1.pem", rk, true, 0o600), rk.Public()},
		{"rsa pkcs8", writeKeyPEM(t, dir, "p8.pem", rk, false, 0o600), rk.Public()},
		{"ed25519 pkcs8", writeKeyPEM(t, dir, "ed.pem", ek, false, 0o600), ek.Public()},
	}
	// dkimpy's raw base64 seed, as dknewkey --ktype ed25519 writes it.
	raw := filepath.Join(dir, "ed.key")
	if err := os.WriteFile(raw, []byte(rfc8463Seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		name string
		path string
		want any
	}{"ed25519 raw base64", raw, ek.Public()})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := LoadKey(c.path, "Example.COM", "sel", LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if k.Domain != "example.com" || k.Selector != "sel" || k.Path != c.path {
				t.Errorf("key = %+v", k)
			}
			switch want := c.want.(type) {
			case *rsa.PublicKey:
				if !want.Equal(k.Signer.Public()) {
					t.Error("wrong RSA key")
				}
				if k.Algorithm() != "rsa-sha256" {
					t.Errorf("Algorithm = %q", k.Algorithm())
				}
			case ed25519.PublicKey:
				if !want.Equal(k.Signer.Public()) {
					t.Error("wrong Ed25519 key")
				}
				if k.Algorithm() != "ed25519-sha256" {
					t.Errorf("Algorithm = %q", k.Algorithm())
				}
			}
		})
	}
}

func TestLoadKeyRefusals(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.pem")
	if err := os.WriteFile(short, []byte(short512PEM), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("hello, world\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	readable := writeKeyPEM(t, dir, "readable.pem", testRSA(t), false, 0o640)
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path, want string
	}{
		{short, "512 bits is too short"},
		{garbage, "not a PEM key"},
		{readable, "accessible by group or others"},
		{cert, "unsupported PEM block"},
		{filepath.Join(dir, "missing"), "no such file"},
	}
	for _, c := range cases {
		_, err := LoadKey(c.path, "example.com", "sel", LoadOptions{})
		if err == nil {
			t.Errorf("%s: loaded", c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want the file name and %q", c.path, err, c.want)
		}
	}
	if _, err := LoadKey(readable, "example.com", "sel", LoadOptions{AllowGroupReadable: true}); err != nil {
		t.Errorf("AllowGroupReadable: %v", err)
	}
}

// TestOpenDKIMGenkeyKeysLoad: keys made by opendkim-genkey load, and the
// record it wrote is the one GenerateKey would write for that key.
func TestOpenDKIMGenkeyKeysLoad(t *testing.T) {
	genkey, err := exec.LookPath("opendkim-genkey")
	if err != nil {
		t.Skip("opendkim-genkey not installed (Debian package opendkim-tools)")
	}
	dir := t.TempDir()
	out, err := exec.Command(genkey, "-b", "2048", "-d", "example.com", "-s", "ogk", "-D", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim-genkey: %v: %s", err, out)
	}
	k, err := LoadKey(filepath.Join(dir, "ogk.private"), "example.com", "ogk", LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.ReadFile(filepath.Join(dir, "ogk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if ours := zoneRecord("example.com", "ogk", k.Signer.Public()); ours != string(theirs) {
		t.Errorf("zone record differs from opendkim-genkey's:\nours:   %q\ntheirs: %q", ours, theirs)
	}
	// And through a KeyList, by dkim-filter's name without extension.
	kl := filepath.Join(dir, "keylist")
	if err := os.WriteFile(kl, []byte("*@example.com:example.com:"+filepath.Join(dir, "ogk")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyList(kl, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if keys := kr.Lookup("joe@example.com"); len(keys) != 1 || keys[0].Selector != "ogk" || keys[0].Path != filepath.Join(dir, "ogk.private") {
		t.Errorf("Lookup = %+v", keys)
	}
}

func TestGenerateKey(t *testing.T) {
	for _, typ := range []string{"rsa", "ed25519"} {
		t.Run(typ, func(t *testing.T) {
			dir := t.TempDir()
			g, err := GenerateKey(GenerateOptions{Domain: "Example.com", Selector: "s1", Dir: dir, Type: typ, Bits: 1024})
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(g.KeyPath)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 || g.KeyPath != filepath.Join(dir, "s1.private") {
				t.Errorf("key file %s mode %v", g.KeyPath, fi.Mode())
			}
			data, _ := os.ReadFile(g.KeyPath)
			if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----") {
				t.Errorf("key file is not PKCS#8 PEM: %.40q", data)
			}
			if _, err := LoadKey(g.KeyPath, "example.com", "s1", LoadOptions{}); err != nil {
				t.Fatal(err)
			}
			rec, _ := os.ReadFile(g.RecordPath)
			if string(rec) != g.Record {
				t.Error("SELECTOR.txt differs from Record")
			}
			if !strings.HasPrefix(g.Record, "s1._domainkey\tIN\tTXT\t( \"v=DKIM1; ") || !strings.HasSuffix(g.Record, " )  ; ----- DKIM key s1 for example.com\n") {
				t.Errorf("record = %q", g.Record)
			}
			// Every quoted string under 255 bytes, and together they are TXT.
			var joined strings.Builder
			for i, part := range strings.Split(g.Record, "\"") {
				if i%2 == 1 {
					if len(part) >= 255 {
						t.Errorf("string of %d bytes", len(part))
					}
					joined.WriteString(part)
				}
			}
			if joined.String() != g.TXT {
				t.Errorf("record strings %q != TXT %q", joined.String(), g.TXT)
			}
			if want := "*@example.com:example.com:" + filepath.Join(dir, "s1"); g.KeyListLine != want {
				t.Errorf("KeyListLine = %q, want %q", g.KeyListLine, want)
			}
			// The TXT value is a key record for this very key.
			_, res := newDNS(t, zoneTXT("s1._domainkey.example.com", g.TXT))
			if err := TestKey(t.Context(), res, "example.com", "s1", g.KeyPath, LoadOptions{}); err != nil {
				t.Errorf("TestKey: %v", err)
			}
			if _, err := GenerateKey(GenerateOptions{Domain: "example.com", Selector: "s1", Dir: dir, Type: typ}); err == nil || !strings.Contains(err.Error(), "already exists") {
				t.Errorf("second GenerateKey: %v, want refusal to overwrite", err)
			}
		})
	}
	for _, bad := range []GenerateOptions{
		{Domain: "example.com", Selector: "s", Bits: 512},
		{Domain: "example.com", Selector: "s", Type: "dsa"},
		{Domain: "exa mple.com", Selector: "s"},
		{Domain: "example.com", Selector: "a/b"},
	} {
		bad.Dir = t.TempDir()
		if _, err := GenerateKey(bad); err == nil {
			t.Errorf("GenerateKey(%+v) succeeded", bad)
		}
	}
}
