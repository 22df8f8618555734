package greylist

import (
	"net/netip"
	"strings"
	"testing"
)

var normalizeCases = []struct {
	name, in, want string
}{
	{"null sender", "", ""},
	{"plain", "John.Doe@Example.COM", "john.doe@example.com"},
	{"no domain", "MAILER-DAEMON", "mailer-daemon"},
	{"plus extension", "user+tag@example.org", "user@example.org"},
	{"mailman VERP", "debian-devel-bounces+user=example.com@lists.debian.org", "debian-devel-bounces@lists.debian.org"},
	{"google groups VERP", "mylist+bncBDL3XQGPXIFRB5GX2KFAMGQE4FAKLAY@googlegroups.com", "mylist@googlegroups.com"},
	{"facebook notification", "notification+zj4o1ux6=1a@facebookmail.com", "notification@facebookmail.com"},
	{"gmail bounce", "bounce-123456789@gmail.com", "bounce-#@gmail.com"},
	{"ezmlm VERP digits", "list-return-1234-user=example.com@lists.example.org", "list-return-#-user=example.com@lists.example.org"},
	{"postgrey digits", "bounce-12-34.5@example.com", "bounce-#-#.#@example.com"},
	{"digits inside a word stay", "user2024@example.com", "user2024@example.com"},
	{"amazon ses", "0100018c7a6f3e21-5a3bb0c2-a7d4-4ff0-9a2e-0f3c1d2b9e8a-000000@amazonses.com", "#@amazonses.com"},
	{"amazon ses eu", "010201907b2f1c3e-9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d-000000@eu-west-1.amazonses.com", "#@eu-west-1.amazonses.com"},
	{"mailchimp", "bounce-mc.us5_12345678.1234567-abcdef1234@mail123.suw11.mcdlv.net", "bounce-mc.us5_#.#@mail123.suw11.mcdlv.net"},
	{"sendgrid", "bounces+1234567-abcd-user=example.com@em1234.example.com", "bounces@em1234.example.com"},
	{"hex id with digits", "msgid-deadbeef42@example.com", "msgid-#@example.com"},
	{"hex word without digit stays", "deadbeefcafe@example.com", "deadbeefcafe@example.com"},
	{"short hex stays", "ab12cd@example.com", "ab12cd@example.com"},
	{"batv prvs", "prvs=1234abcdef=user@example.com", "user@example.com"},
	{"batv reversed", "prvs=user=1234abcdef@example.com", "user@example.com"},
	{"batv both look like tags: standard order", "prvs=0123456789=longusername@example.com", "longusername@example.com"},
	{"batv upper case", "PRVS=0012A3B4C5=Alice@Example.com", "alice@example.com"},
	{"batv msprvs1", "msprvs1=19815ahbsamcgy=bounces-76599-1@spmailtechn.com", "bounces-#-#@spmailtechn.com"},
	{"batv btv1 barracuda", "btv1==5ae4f2ad64c==user@example.com", "user@example.com"},
	{"srs0", "SRS0=HHH=TT=orig.example=alice@forwarder.example", "alice@orig.example"},
	{"srs0 real", "SRS0=a3bX=2Z=example.com=john.doe@fwd.example.net", "john.doe@example.com"},
	{"srs0 plus separator", "SRS0+xyz=AB=example.org=bob@fwd.example", "bob@example.org"},
	{"srs0 local with equals", "SRS0=h=tt=example.org=a=b@fwd.example", "a=b@example.org"},
	{"srs1", "SRS1=X9cD=first.example==Hh1=TT=orig.example=carol@second.example", "carol@orig.example"},
	{"srs0 wrapping batv", "SRS0=h=tt=example.com=prvs=1234abcdef=dave@fwd.example", "dave@example.com"},
	{"srs0 wrapping ses", "SRS0=Ab1c=3Q=amazonses.com=0100018c7a6f3e21-5a3bb0c2-a7d4-4ff0-9a2e-0f3c1d2b9e8a-000000@fwd.example", "#@amazonses.com"},
	{"broken srs0 left alone", "SRS0=onlytwo=parts@fwd.example", "srs0=onlytwo=parts@fwd.example"},
	{"address with two @", "\"a@b\"@example.com", "\"a@b\"@example.com"},
}

func TestNormalizeSender(t *testing.T) {
	for _, c := range normalizeCases {
		if got := NormalizeSender(c.in); got != c.want {
			t.Errorf("%s: NormalizeSender(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

func TestClientNetwork(t *testing.T) {
	cases := []struct {
		ip         string
		v4, v6     int
		wantNetKey string
	}{
		{"192.0.2.77", 24, 64, "192.0.2.0"},
		{"192.0.2.77", 32, 64, "192.0.2.77"},
		{"192.0.2.77", 16, 64, "192.0.0.0"},
		{"::ffff:192.0.2.77", 24, 64, "192.0.2.0"},
		{"2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::"},
		{"2001:db8:1:2:3:4:5:6", 24, 128, "2001:db8:1:2:3:4:5:6"},
		{"fe80::1%eth0", 24, 64, "fe80::"},
	}
	for _, c := range cases {
		if got := clientNetwork(netip.MustParseAddr(c.ip), c.v4, c.v6); got != c.wantNetKey {
			t.Errorf("clientNetwork(%s, %d, %d) = %q, want %q", c.ip, c.v4, c.v6, got, c.wantNetKey)
		}
	}
}

func FuzzNormalizeSender(f *testing.F) {
	for _, c := range normalizeCases {
		f.Add(c.in)
	}
	f.Add("SRS1=a=b==SRS0=c=d=e=f@g")
	f.Add("prvs==@")
	f.Add("btv1====@x")
	f.Add("a-1-b-2-c-3-d-4-e-5@x")
	f.Fuzz(func(t *testing.T, in string) {
		out := NormalizeSender(in)
		if out != strings.ToLower(out) {
			t.Fatalf("NormalizeSender(%q) = %q: not lower-case", in, out)
		}
		if at := strings.LastIndexByte(out, '@'); at >= 0 && strings.Contains(out[:at], "+") {
			t.Fatalf("NormalizeSender(%q) = %q: extension left", in, out)
		}
		if again := NormalizeSender(in); again != out {
			t.Fatalf("NormalizeSender(%q) not deterministic: %q, %q", in, out, again)
		}
		if in == "" && out != "" {
			t.Fatalf("null sender became %q", out)
		}
	})
}
