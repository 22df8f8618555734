package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"postgate/dkim"
)

// mta speaks the MTA side of the milter protocol the way Postfix does with
// milter_protocol = 6: it offers every option, then skips the events and
// replies the milter declined. go-milter's client cannot: it refuses a
// version 2 milter once it offers a version 6 option.
type mta struct {
	t     testing.TB
	c     net.Conn
	br    *bufio.Reader
	neg   optNeg
	syms  map[uint32]string
	mods  []gomilter.ModifyAction
	final byte
}

func dialMTA(t testing.TB, addr string) *mta {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	m := &mta{t: t, c: c, br: bufio.NewReader(c), syms: map[uint32]string{}}
	m.send('O', be32(6), be32(0x1ff), be32(0x1fffff))
	code, data := m.read()
	if code != 'O' {
		t.Fatalf("OPTNEG reply %q", code)
	}
	var err2 error
	if m.neg, err2 = parseOptNeg(append([]byte{'O'}, data...)); err2 != nil {
		t.Fatal(err2)
	}
	for rest := data[12:]; len(rest) >= 4; {
		stage := binary.BigEndian.Uint32(rest)
		s, after, _ := bytes.Cut(rest[4:], []byte{0})
		m.syms[stage] = string(s)
		rest = after
	}
	return m
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cstr(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

func (m *mta) send(code byte, parts ...[]byte) {
	m.t.Helper()
	body := append([]byte{code}, bytes.Join(parts, nil)...)
	if _, err := m.c.Write(append(be32(uint32(len(body))), body...)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mta) read() (byte, []byte) {
	m.t.Helper()
	var n uint32
	if err := binary.Read(m.br, binary.BigEndian, &n); err != nil {
		m.t.Fatalf("read: %v", err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(m.br, buf); err != nil {
		m.t.Fatal(err)
	}
	return buf[0], buf[1:]
}

// event sends an event and reads the reply unless the milter declined it
// (skip) or its reply (noReply).
func (m *mta) event(skip, noReply gomilter.OptProtocol, code byte, parts ...[]byte) {
	m.t.Helper()
	if m.neg.protocol&skip != 0 {
		return
	}
	m.send(code, parts...)
	if noReply != 0 && m.neg.protocol&noReply != 0 {
		return
	}
	if c, _ := m.read(); c != 'c' {
		m.t.Fatalf("reply %q to %q, want continue", c, code)
	}
}

// message runs one transaction; headers are sent byte-exact (leading
// space and all) when the milter asked for it, as Postfix does.
func (m *mta) message(c client, msg string, mailMacros ...string) {
	m.t.Helper()
	m.send('D', []byte{'C'}, cstr("{daemon_name}", c.daemonName, "j", "mx.example.org"))
	m.event(gomilter.OptNoConnect, gomilter.OptNoConnReply, 'C', cstr(c.host), []byte{byte(c.family)}, binary.BigEndian.AppendUint16(nil, c.port), cstr(c.addr))
	m.event(gomilter.OptNoHelo, gomilter.OptNoHeloReply, 'H', cstr("helo.example"))
	m.send('D', []byte{'M'}, cstr(mailMacros...))
	m.event(gomilter.OptNoMailFrom, gomilter.OptNoMailReply, 'M', cstr("<alice@example.com>"))
	m.event(gomilter.OptNoRcptTo, gomilter.OptNoRcptReply, 'R', cstr("<bob@example.net>"))
	m.event(gomilter.OptNoData, gomilter.OptNoDataReply, 'T')
	fields, body := splitMessage(m.t, msg)
	for _, f := range fields {
		v := f.value
		if m.neg.protocol&gomilter.OptHeaderLeadingSpace == 0 {
			v = strings.TrimPrefix(v, " ")
		}
		m.event(gomilter.OptNoHeaders, gomilter.OptNoHeaderReply, 'L', cstr(f.name, v))
	}
	m.event(gomilter.OptNoEOH, gomilter.OptNoEOHReply, 'N')
	m.event(gomilter.OptNoBody, gomilter.OptNoBodyReply, 'B', []byte(strings.ReplaceAll(body, "\n", "\r\n")))
	m.send('D', []byte{'E'}, cstr("i", "4QUEUEID"))
	m.send('E')
	m.mods = nil
	for {
		code, data := m.read()
		switch gomilter.ModifyActCode(code) {
		case gomilter.ActInsertHeader, gomilter.ActChangeHeader, gomilter.ActAddHeader:
			act := gomilter.ModifyAction{Code: gomilter.ModifyActCode(code)}
			if code != 'h' {
				act.HeaderIndex = binary.BigEndian.Uint32(data)
				data = data[4:]
			}
			name, rest, _ := bytes.Cut(data, []byte{0})
			value, _, _ := bytes.Cut(rest, []byte{0})
			act.HeaderName, act.HeaderValue = string(name), string(value)
			m.mods = append(m.mods, act)
			continue
		}
		m.final = code
		return
	}
}

// With Postfix's offer the milter takes the leading-space option, skips
// HELO/RCPT/DATA, gets headers and body without replying to each, and asks
// for its macros: and a simple/simple signature over odd header spacing
// still verifies, because values arrive and leave byte-exact.
func TestPostfixStyleNegotiation(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SignOptions = &dkim.SignOptions{Canonicalization: "simple/simple"} })
	m := dialMTA(t, e.addr)
	if m.neg.protocol != wantSkip|wantNoReply|wantLeadSpace {
		t.Errorf("negotiated protocol %#x, want %#x", m.neg.protocol, wantSkip|wantNoReply|wantLeadSpace)
	}
	if !strings.Contains(m.syms[uint32(gomilter.StageConnect)], "{daemon_name}") || !strings.Contains(m.syms[uint32(gomilter.StageMailFrom)], "{auth_authen}") {
		t.Errorf("symbol lists %v lack {daemon_name} at connect or {auth_authen} at MAIL", m.syms)
	}
	msg := "From:alice@example.com\n" + // no space
		"Subject:\tTabbed subject\n" +
		"To:  two spaces <bob@example.net>\n" +
		"X-Folded: one\n  two\n" +
		"\n" + "Body.\n"
	for range 2 { // two messages on one connection
		m.message(external, msg, "i", "4QUEUEID", "{auth_authen}", "alice")
		if m.final != 'a' {
			t.Fatalf("final reply %q, want accept", m.final)
		}
		sigs := inserted(m.mods, "DKIM-Signature")
		if len(sigs) != 2 {
			t.Fatalf("mods %+v", m.mods)
		}
		for _, s := range sigs {
			if !strings.HasPrefix(s.HeaderValue, " ") || strings.HasPrefix(s.HeaderValue, "  ") {
				t.Errorf("with the leading-space option the value must bring its space: %q", s.HeaderValue)
			}
		}
		out := apply(t, msg, m.mods, true)
		for _, r := range e.verifyGo(out) {
			if r.Status != dkim.StatusPass {
				t.Errorf("dkim package: %+v\n%s", r, out)
			}
		}
		if got := e.verifyPython(out); strings.Join(got, " ") != "pass pass" {
			t.Errorf("dkimpy: %v\n%s", got, out)
		}
	}
}
