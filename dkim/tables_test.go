package dkim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		p, s string
		want bool
	}{
		{"*", "", true},
		{"*", "joe@example.com", true},
		{"*@example.com", "joe@example.com", true},
		{"*@example.com", "joe@EXAMPLE.com", true},
		{"*@Example.COM", "joe@example.com", true},
		{"*@example.com", "joe@sub.example.com", false},
		{"*@*.example.com", "joe@sub.example.com", true},
		{"*@*.example.com", "joe@example.com", false},
		{"joe@example.com", "joe@example.com", true},
		{"joe@example.com", "joey@example.com", false},
		{"j*e@example.com", "je@example.com", true},
		{"j*e@example.com", "jooooe@example.com", true},
		{"j*e@example.com", "jooooex@example.com", false},
		{"**@x", "a@x", true},
		{"a*a*a*a*b", strings.Repeat("a", 200), false},
		{"*.com", "joe@example.org", false},
	}
	for _, c := range cases {
		if got := matchPattern(c.p, c.s); got != c.want {
			t.Errorf("matchPattern(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

func TestParseKeyList(t *testing.T) {
	in := "# dkim-filter keys\n" +
		"\n" +
		"*@example.com:example.com:/etc/dkim/example.com # trailing comment\n" +
		"  joe@Example.org : Example.ORG : /etc/dkim/sel.2024  \n"
	got, err := ParseKeyList(strings.NewReader(in), "keylist")
	if err != nil {
		t.Fatal(err)
	}
	want := []KeyListEntry{
		{Line: 3, Pattern: "*@example.com", Domain: "example.com", KeyPath: "/etc/dkim/example.com", Selector: "example.com"},
		{Line: 4, Pattern: "joe@Example.org", Domain: "example.org", KeyPath: "/etc/dkim/sel.2024", Selector: "sel.2024"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	bad := "*@example.com:example.com\n" + // line 1: two fields
		"ok@example.com:example.com:/k/sel\n" +
		":example.com:/k/sel\n" + // line 3: empty pattern
		"*@x:bad domain:/k/sel\n" + // line 4
		"*@x:x.com:\n" + // line 5: empty path
		"*@x:x.com:/k/bad selector\n" // line 6
	_, err = ParseKeyList(strings.NewReader(bad), "/etc/postgate/keylist")
	if err == nil {
		t.Fatal("no error")
	}
	for _, line := range []string{":1: ", ":3: ", ":4: ", ":5: ", ":6: "} {
		if !strings.Contains(err.Error(), "/etc/postgate/keylist"+line) {
			t.Errorf("error %q lacks FILE%s", err, line)
		}
	}
	if strings.Contains(err.Error(), "keylist:2:") {
		t.Errorf("good line 2 reported: %v", err)
	}
}

func TestParseKeyTableAndSigningTable(t *testing.T) {
	kt := "k1 example.com:sel1:/keys/k1.private\n" +
		"k2\t%:sel2:./k2.pem   # any domain\n"
	keys, err := ParseKeyTable(strings.NewReader(kt), "KeyTable")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != (KeyTableEntry{Line: 1, Name: "k1", Domain: "example.com", Selector: "sel1", KeyPath: "/keys/k1.private"}) ||
		keys[1] != (KeyTableEntry{Line: 2, Name: "k2", Domain: "%", Selector: "sel2", KeyPath: "./k2.pem"}) {
		t.Errorf("keys = %+v", keys)
	}
	_, err = ParseKeyTable(strings.NewReader("k1 example.com:sel1\nk1 example.com:s:/a\nk1 example.com:s:/b\nk3 example.com:s:MIIEvQ\n"), "KT")
	for _, want := range []string{"KT:1: ", "KT:3: key \"k1\" already defined on line 2", "KT:4: ", "inline keys"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}

	st := "*@example.com k1\njoe@example.com k2 joe@example.com\n"
	sig, err := ParseSigningTable(strings.NewReader(st), "ST", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != 2 || sig[1] != (SigningTableEntry{Line: 2, Pattern: "joe@example.com", KeyName: "k2", Identity: "joe@example.com"}) {
		t.Errorf("signing table = %+v", sig)
	}
	_, err = ParseSigningTable(strings.NewReader("lonely\n*@x k a b\n"), "ST", true)
	if err == nil || !strings.Contains(err.Error(), "ST:1: ") || !strings.Contains(err.Error(), "ST:2: ") {
		t.Errorf("error = %v", err)
	}
}

// keyDir writes an RSA and an Ed25519 key in a fresh directory.
func keyDir(t *testing.T) (dir, rsaPath, edPath string) {
	dir = t.TempDir()
	rsaPath = writeKeyPEM(t, dir, "rsa.private", testRSA(t), true, 0o600)
	edPath = writeKeyPEM(t, dir, "ed.pem", testEd25519(t), false, 0o600)
	return dir, rsaPath, edPath
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func selectors(keys []*Key) string {
	var s []string
	for _, k := range keys {
		s = append(s, k.Domain+"/"+k.Selector+"/"+strings.Split(k.Algorithm(), "-")[0])
	}
	return strings.Join(s, ",")
}

func TestLoadKeyList(t *testing.T) {
	dir, _, _ := keyDir(t)
	kl := writeFile(t, dir, "keylist", ""+
		"# first match wins, RSA + Ed25519 dual signing for example.com\n"+
		"ceo@example.com:example.com:"+dir+"/rsa\n"+ // .private found
		"*@example.com:example.com:"+dir+"/rsa\n"+
		"*@example.com:example.com:"+dir+"/ed\n"+ // .pem found
		"*@example.com:other.example:"+dir+"/ed\n"+ // other domain: ignored
		"*@*.example.com:example.com:"+dir+"/rsa.private\n"+ // as written: selector rsa.private
		"*@example.org:example.org:"+dir+"/ed\n")
	kr, err := LoadKeyList(kl, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kr.Len() != 6 {
		t.Errorf("Len = %d", kr.Len())
	}
	cases := map[string]string{
		"ceo@example.com":     "example.com/rsa/rsa,example.com/ed/ed25519",
		"Joe@EXAMPLE.COM":     "example.com/rsa/rsa,example.com/ed/ed25519",
		"joe@sub.example.com": "example.com/rsa.private/rsa",
		"joe@example.org":     "example.org/ed/ed25519",
		"joe@example.net":     "",
		"no-at-sign":          "",
	}
	for author, want := range cases {
		if got := selectors(kr.Lookup(author)); got != want {
			t.Errorf("Lookup(%q) = %q, want %q", author, got, want)
		}
	}
	keys := kr.Lookup("joe@example.com")
	if keys[0].Path != dir+"/rsa.private" || keys[1].Path != dir+"/ed.pem" {
		t.Errorf("paths %q %q", keys[0].Path, keys[1].Path)
	}
	var nilKR *Keyring
	if nilKR.Lookup("joe@example.com") != nil {
		t.Error("nil Keyring signs")
	}
}

func TestLoadKeyListErrors(t *testing.T) {
	dir, rsaPath, _ := keyDir(t)
	if err := os.Chmod(rsaPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(writeFile(t, dir, "junk.pem", "junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	kl := writeFile(t, dir, "keylist", ""+
		"*@a.example:a.example:"+dir+"/ed\n"+ // good
		"*@b.example:b.example:"+dir+"/missing\n"+ // line 2
		"*@c.example:c.example:"+dir+"/rsa\n"+ // line 3: mode 0644
		"*@d.example:d.example:"+dir+"/junk\n") // line 4: junk.pem unparsable
	_, err := LoadKeyList(kl, LoadOptions{})
	if err == nil {
		t.Fatal("loaded")
	}
	msg := err.Error()
	for _, want := range []string{
		kl + ":2: key " + dir + "/missing: no such file (nor .pem, nor .private)",
		kl + ":3: " + rsaPath + ": private key is accessible by group or others",
		kl + ":4: " + dir + "/junk.pem: not a PEM key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q\nlacks %q", msg, want)
		}
	}
	if strings.Contains(msg, ":1:") {
		t.Errorf("good line reported: %s", msg)
	}
	if _, err := LoadKeyList(kl, LoadOptions{AllowGroupReadable: true}); err == nil || strings.Contains(err.Error(), ":3:") {
		t.Errorf("AllowGroupReadable: %v", err)
	}
	if _, err := LoadKeyList(filepath.Join(dir, "nonexistent"), LoadOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing keylist: %v", err)
	}
}

func TestLoadKeyTablesRefile(t *testing.T) {
	dir, rsaPath, edPath := keyDir(t)
	kt := writeFile(t, dir, "KeyTable", ""+
		"rsa example.com:rsa:"+rsaPath+"\n"+
		"ed example.com:ed:"+edPath+"\n"+
		"any %:any:"+rsaPath+"\n")
	st := writeFile(t, dir, "SigningTable", ""+
		"*@example.com rsa\n"+
		"*@example.com ed\n"+
		"*@hosted.example any %\n")
	kr, err := LoadKeyTables("refile:"+st, kt, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := selectors(kr.Lookup("joe@example.com")); got != "example.com/rsa/rsa,example.com/ed/ed25519" {
		t.Errorf("dual = %q", got)
	}
	keys := kr.Lookup("joe@Hosted.Example")
	if len(keys) != 1 || keys[0].Domain != "hosted.example" || keys[0].Identity != "" {
		t.Errorf("%% domain: %+v", keys)
	}
	// the shared key is not modified by a %-substitution
	if keys := kr.Lookup("joe@hosted.example"); keys[0].Domain != "hosted.example" {
		t.Error("second lookup differs")
	}

	// A broken SigningTable or KeyTable fails the whole load, FILE:LINE each.
	badST := writeFile(t, dir, "badST", "*@example.com rsa\n*@example.com nosuchkey\n")
	badKT := writeFile(t, dir, "badKT", "rsa example.com:rsa:"+rsaPath+"\nbroken example.com\n")
	_, err = LoadKeyTables("refile:"+badST, badKT, LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), badKT+":2: ") {
		t.Errorf("bad KeyTable: %v", err)
	}
	_, err = LoadKeyTables("refile:"+badST, kt, LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), badST+":2: key name \"nosuchkey\" is not in "+kt) {
		t.Errorf("bad SigningTable: %v", err)
	}
}

func TestLoadKeyTablesPlainOrder(t *testing.T) {
	dir, rsaPath, _ := keyDir(t)
	var kt, st strings.Builder
	// One key per lookup form, each its own selector, all RSA: the first
	// found in OpenDKIM's order wins.
	forms := []string{"joe@mail.example.com", "*@mail.example.com", "mail.example.com", "joe@.example.com", "joe@.com", ".example.com", ".com", "joe@*", "*"}
	for i, f := range forms {
		name := "k" + string(rune('a'+i))
		kt.WriteString(name + " example.com:" + name + ":" + rsaPath + "\n")
		st.WriteString(f + " " + name + "\n")
	}
	ktPath := writeFile(t, dir, "kt", kt.String())
	for i := range forms {
		// Drop the forms before i: the lookup must fall through to form i.
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(st.String()), "\n")[i:] {
			lines = append(lines, l)
		}
		stPath := writeFile(t, dir, "st", strings.Join(lines, "\n")+"\n")
		kr, err := LoadKeyTables("file:"+stPath, ktPath, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := "k" + string(rune('a'+i))
		keys := kr.Lookup("Joe@Mail.Example.com")
		if len(keys) != 1 || keys[0].Selector != want {
			t.Errorf("with forms from %q: got %s, want selector %s", forms[i], selectors(keys), want)
		}
	}
	stPath := writeFile(t, dir, "st", "joe@mail.example.com ka\n")
	kr, err := LoadKeyTables(stPath, ktPath, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if keys := kr.Lookup("jim@mail.example.com"); keys != nil {
		t.Errorf("exact entry matched another user: %s", selectors(keys))
	}
}

func FuzzParseKeyList(f *testing.F) {
	f.Add("*@example.com:example.com:/etc/dkim/example.com\n# c\n\n")
	f.Add("a:b\n:::\n*@x:x:/a/b.c # x\n")
	f.Add(strings.Repeat("*", 300) + ":example.com:/k\n")
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseKeyList(strings.NewReader(in), "f")
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Pattern == "" || e.KeyPath == "" || checkSelector(e.Selector) != nil || checkDomain(e.Domain) != nil {
				t.Errorf("accepted bad entry %+v", e)
			}
			matchPattern(e.Pattern, "joe@example.com")
		}
	})
}

func FuzzParseKeyTable(f *testing.F) {
	f.Add("k1 example.com:sel:/keys/k1\n")
	f.Add("k2\t%:sel:./k\nk2 x:y:/z\n")
	f.Add("k3 example.com:sel\n#x\n")
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseKeyTable(strings.NewReader(in), "f")
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Name == "" || checkSelector(e.Selector) != nil || e.KeyPath == "" {
				t.Errorf("accepted bad entry %+v", e)
			}
		}
	})
}

func FuzzParseSigningTable(f *testing.F) {
	f.Add("*@example.com k1\njoe@example.com k2 joe@example.com\n", true)
	f.Add("example.com k1\n.com k2\n*\tk3\n", false)
	f.Add("only-one-field\n", true)
	f.Fuzz(func(t *testing.T, in string, refile bool) {
		entries, err := ParseSigningTable(strings.NewReader(in), "f", refile)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.Pattern == "" || e.KeyName == "" {
				t.Errorf("accepted bad entry %+v", e)
			}
			if refile {
				matchPattern(e.Pattern, "joe@example.com")
			}
		}
	})
}
