package policy

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func parseText(s string) (*Request, error) {
	return ReadRequest(bufio.NewReader(strings.NewReader(s)), Limits{})
}

func TestReadRequestPostfix(t *testing.T) {
	req := mustParse(t, postfixRCPT)
	checks := []struct{ got, want any }{
		{req.Request, RequestType},
		{req.ProtocolState, "RCPT"},
		{req.ProtocolName, "ESMTP"},
		{req.HeloName, "Mail.Example.ORG"},          // case kept
		{req.Sender, "Alice.Smith+tag@Example.org"}, // case kept
		{req.Recipient, "Bob@example.net"},
		{req.QueueID, ""},
		{req.ClientAddress, "192.0.2.10"},
		{req.ClientIP, netip.MustParseAddr("192.0.2.10")},
		{req.ClientName, "mail.example.org"},
		{req.ReverseClientName, "mail.example.org"},
		{req.Instance, "1a2b.6655f0a1.8c3d2.0"},
		{req.Size, int64(12345)},
		{req.EncryptionProtocol, "TLSv1.3"},
		{req.EncryptionCipher, "TLS_AES_256_GCM_SHA384"},
		{req.EncryptionKeysize, 256},
		{req.ClientPort, 41234},
		{req.ServerAddress, "198.51.100.1"},
		{req.ServerPort, 25},
		{req.CompatibilityLevel, "3.6"},
		{req.MailVersion, "3.8.1"},
		{len(req.Attrs), 31},
		{req.Get("stress"), ""},
		{req.Get("mail_version"), "3.8.1"},
	}
	for i, c := range checks {
		if c.got != c.want {
			t.Errorf("check %d: got %#v, want %#v", i, c.got, c.want)
		}
	}
}

func TestReadRequestValues(t *testing.T) {
	req := mustParse(t, "request=smtpd_access_policy\r\n"+
		"sender=a=b@EXAMPLE.com\r\n"+ // "=" in a value, CRLF line ends
		"x_future_attribute=Kept As Is \n"+
		"client_address=::ffff:192.0.2.1\n"+
		"sasl_username=User@Example.COM\n"+
		"ccert_subject=CN=Mail Server,O=Example\n"+
		"recipient_count=notanumber\n"+
		"empty=\n"+
		"sender=second@example.com\n"+
		"\r\n")
	if req.Sender != "second@example.com" {
		t.Errorf("Sender = %q (last value wins)", req.Sender)
	}
	if got := req.Attrs[1]; got != (Attr{"sender", "a=b@EXAMPLE.com"}) {
		t.Errorf("Attrs[1] = %#v", got)
	}
	if got := req.Get("x_future_attribute"); got != "Kept As Is " {
		t.Errorf("unknown attribute = %q", got)
	}
	if req.ClientIP != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("ClientIP = %v, want unmapped 192.0.2.1", req.ClientIP)
	}
	if req.ClientAddress != "::ffff:192.0.2.1" {
		t.Errorf("ClientAddress = %q (must stay as sent)", req.ClientAddress)
	}
	if req.SASLUsername != "User@Example.COM" || req.CCertSubject != "CN=Mail Server,O=Example" {
		t.Errorf("sasl=%q ccert=%q", req.SASLUsername, req.CCertSubject)
	}
	if req.RecipientCount != 0 || req.Get("recipient_count") != "notanumber" {
		t.Errorf("recipient_count typed=%d raw=%q", req.RecipientCount, req.Get("recipient_count"))
	}
	if len(req.Attrs) != 9 {
		t.Errorf("len(Attrs) = %d, want 9", len(req.Attrs))
	}

	v6 := mustParse(t, "client_address=2001:db8::25\n\n")
	if v6.ClientIP != netip.MustParseAddr("2001:db8::25") {
		t.Errorf("IPv6 ClientIP = %v", v6.ClientIP)
	}
	bad := mustParse(t, "client_address=unknown\n\n")
	if bad.ClientIP.IsValid() {
		t.Errorf("ClientIP for 'unknown' = %v, want invalid", bad.ClientIP)
	}
}

func TestReadRequestStream(t *testing.T) {
	in := postfixRCPT + "request=smtpd_access_policy\nno equals sign\nsender=x@y\n\n" + postfixDATA + "\n" + "sender=partial"
	r := bufio.NewReader(strings.NewReader(in))
	if req, err := ReadRequest(r, Limits{}); err != nil || req.ProtocolState != "RCPT" {
		t.Fatalf("first: %v %v", req, err)
	}
	_, err := ReadRequest(r, Limits{})
	var pe *ProtocolError
	if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) || pe.Line != 2 || pe.Fatal() || pe.Kind() != "malformed" {
		t.Fatalf("malformed: %v", err)
	}
	// The malformed request was consumed whole: the stream is in sync.
	if req, err := ReadRequest(r, Limits{}); err != nil || req.ProtocolState != "DATA" || req.QueueID != "4XyZ1k2Abcz9" {
		t.Fatalf("after malformed: %+v %v", req, err)
	}
	// A lone empty line is a request without attributes.
	if req, err := ReadRequest(r, Limits{}); err != nil || len(req.Attrs) != 0 || req.Request != "" {
		t.Fatalf("empty request: %+v %v", req, err)
	}
	_, err = ReadRequest(r, Limits{})
	if !errors.Is(err, ErrTruncated) || !errors.As(err, &pe) || !pe.Fatal() {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader("")), Limits{}); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader("a=b\n")), Limits{}); !errors.Is(err, ErrTruncated) {
		t.Fatalf("EOF after a line: %v", err)
	}
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader("=value\n\n")), Limits{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty name: %v", err)
	}
}

func TestReadRequestLimits(t *testing.T) {
	lim := Limits{MaxLineLength: 40, MaxAttributes: 5, MaxRequestSize: 120}
	long := "sender=" + strings.Repeat("x", 34) // 41 bytes
	tests := []struct {
		name, in string
		want     error
		kind     string
	}{
		{"line at limit", "sender=" + strings.Repeat("x", 33) + "\r\n\n", nil, ""},
		{"line too long", long + "\n\n", ErrLineTooLong, "line_too_long"},
		{"huge line, no newline", strings.Repeat("y", 100000), ErrLineTooLong, "line_too_long"},
		{"too many attributes", strings.Repeat("a=b\n", 6) + "\n", ErrTooManyAttributes, "too_many_attributes"},
		{"attributes at limit", strings.Repeat("a=b\n", 5) + "\n", nil, ""},
		{"request too large", strings.Repeat("n="+strings.Repeat("v", 35)+"\n", 4) + "\n", ErrRequestTooLarge, "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A 16-byte buffer makes lines span several ReadSlice calls.
			r := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			_, err := ReadRequest(r, lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var pe *ProtocolError
			if tt.want != nil && (!errors.As(err, &pe) || pe.Kind() != tt.kind || !pe.Fatal()) {
				t.Errorf("error %v: kind %q fatal %v", err, pe.Kind(), pe.Fatal())
			}
		})
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte(postfixRCPT))
	f.Add([]byte(postfixDATA + postfixRCPT))
	f.Add([]byte(request(map[string]string{"protocol_state": "END-OF-MESSAGE", "recipient_count": "3", "queue_id": "4XyZ1k2Abcz9"})))
	f.Add([]byte(request(map[string]string{"client_address": "2001:db8::1", "sasl_method": "PLAIN", "sasl_username": "user"})))
	f.Add([]byte("request=smtpd_access_policy\r\nprotocol_state=RCPT\r\n\r\n"))
	f.Add([]byte("garbage\n\n=x\n\na=b"))
	f.Add([]byte("\n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := Limits{MaxLineLength: 64, MaxAttributes: 8, MaxRequestSize: 256}
		r := bufio.NewReaderSize(strings.NewReader(string(data)), 16)
		for range len(data) + 1 { // each request consumes at least one byte
			req, err := ReadRequest(r, lim)
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && !errors.As(err, &pe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				if pe != nil && pe.Fatal() || err == io.EOF {
					return
				}
				continue
			}
			if len(req.Attrs) > lim.MaxAttributes {
				t.Fatalf("%d attributes over the limit", len(req.Attrs))
			}
			// Round trip: writing the attributes back parses to the same.
			var b strings.Builder
			for _, a := range req.Attrs {
				if a.Name == "" || strings.ContainsAny(a.Name, "=\n") || strings.Contains(a.Value, "\n") {
					t.Fatalf("bad attribute %q", a)
				}
				if len(a.Name)+1+len(a.Value) > lim.MaxLineLength {
					t.Fatalf("attribute line over the limit: %q", a)
				}
				// CRLF: ReadRequest strips one CR, so values ending in CR survive.
				b.WriteString(a.Name + "=" + a.Value + "\r\n")
			}
			b.WriteString("\n")
			again, err := parseText(b.String())
			if err != nil {
				t.Fatalf("round trip of %q: %v", b.String(), err)
			}
			if len(again.Attrs) != len(req.Attrs) {
				t.Fatalf("round trip changed attributes: %q vs %q", req.Attrs, again.Attrs)
			}
			for i := range again.Attrs {
				if again.Attrs[i] != req.Attrs[i] {
					t.Fatalf("round trip changed %q to %q", req.Attrs[i], again.Attrs[i])
				}
			}
			if again.Sender != req.Sender || again.ClientIP != req.ClientIP || again.Instance != req.Instance {
				t.Fatalf("typed fields differ after round trip")
			}
		}
		t.Fatalf("more requests than input bytes")
	})
}
