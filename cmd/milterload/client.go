package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Milter protocol bits this client uses (sendmail's mfapi.h names).
const (
	smfipNoConnect = 1 << 0
	smfipNoHelo    = 1 << 1
	smfipNoMail    = 1 << 2
	smfipNoRcpt    = 1 << 3
	smfipNoBody    = 1 << 4
	smfipNoHdrs    = 1 << 5
	smfipNoEOH     = 1 << 6
	smfipNRHdr     = 1 << 7
	smfipNoData    = 1 << 9
	smfipNRConn    = 1 << 12
	smfipNRHelo    = 1 << 13
	smfipNRMail    = 1 << 14
	smfipNRRcpt    = 1 << 15
	smfipNRData    = 1 << 16
	smfipNREOH     = 1 << 18
	smfipNRBody    = 1 << 19
	smfipLeadSpc   = 1 << 20

	// What Postfix offers with milter_protocol = 6.
	offerActions  = 0x1ff
	offerProtocol = 0x1fffff
)

type clientInfo struct {
	host, addr, daemon string
	port               uint16
}

type header struct{ name, value string } // value as in the message, after the colon

// conn is the MTA side of one milter connection.
type conn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	protocol uint32 // the milter's protocol mask
	cl       clientInfo
}

type result struct {
	final byte
	text  string
	mods  int
}

func dial(network, address string, cl clientInfo) (*conn, error) {
	nc, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &conn{c: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10), cl: cl}
	c.send('O', be32(6), be32(offerActions), be32(offerProtocol))
	if err := c.flush(); err != nil {
		return nil, err
	}
	code, data, err := c.read()
	if err != nil {
		return nil, fmt.Errorf("negotiate: %w", err)
	}
	if code != 'O' || len(data) < 12 {
		return nil, fmt.Errorf("negotiate: reply %q", code)
	}
	c.protocol = binary.BigEndian.Uint32(data[8:])
	// Connect and HELO once per connection, as smtpd does.
	c.send('D', []byte{'C'}, cstr("j", "mx.example.org", "{daemon_name}", cl.daemon, "{client_addr}", cl.addr))
	if err := c.event(smfipNoConnect, smfipNRConn, 'C', cstr(cl.host), []byte{'4'}, binary.BigEndian.AppendUint16(nil, cl.port), cstr(cl.addr)); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := c.event(smfipNoHelo, smfipNRHelo, 'H', cstr("helo.example.net")); err != nil {
		return nil, fmt.Errorf("helo: %w", err)
	}
	return c, nil
}

func (c *conn) close() {
	c.send('Q')
	c.flush()
	c.c.Close()
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cstr(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

func (c *conn) send(code byte, parts ...[]byte) {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	c.bw.Write(be32(uint32(n)))
	c.bw.WriteByte(code)
	for _, p := range parts {
		c.bw.Write(p)
	}
}

func (c *conn) flush() error {
	c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return c.bw.Flush()
}

func (c *conn) read() (byte, []byte, error) {
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("bad packet length %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

// event sends an event unless the milter declined it, and waits for the
// reply unless the milter said it sends none (then, like Postfix, keeps
// writing: the next event that needs a reply flushes).
func (c *conn) event(skip, noReply uint32, code byte, parts ...[]byte) error {
	if c.protocol&skip != 0 {
		return nil
	}
	c.send(code, parts...)
	if c.protocol&noReply != 0 {
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	for {
		r, _, err := c.read()
		if err != nil {
			return err
		}
		switch r {
		case 'p': // progress
			continue
		case 'c':
			return nil
		}
		return fmt.Errorf("reply %q to %q", r, code)
	}
}

// message runs one transaction and returns the final reply.
func (c *conn) message(headers []header, body []byte, mailMacros []string) (result, error) {
	c.send('D', []byte{'M'}, cstr(mailMacros...))
	if err := c.event(smfipNoMail, smfipNRMail, 'M', cstr("<alice@example.com>", "SIZE=2048")); err != nil {
		return result{}, fmt.Errorf("mail: %w", err)
	}
	if err := c.event(smfipNoRcpt, smfipNRRcpt, 'R', cstr("<bob@example.net>")); err != nil {
		return result{}, fmt.Errorf("rcpt: %w", err)
	}
	if err := c.event(smfipNoData, smfipNRData, 'T'); err != nil {
		return result{}, fmt.Errorf("data: %w", err)
	}
	for _, h := range headers {
		v := h.value
		if c.protocol&smfipLeadSpc == 0 && len(v) > 0 && v[0] == ' ' {
			v = v[1:] // Postfix eats one space unless told otherwise
		}
		if err := c.event(smfipNoHdrs, smfipNRHdr, 'L', cstr(h.name, v)); err != nil {
			return result{}, fmt.Errorf("header: %w", err)
		}
	}
	if err := c.event(smfipNoEOH, smfipNREOH, 'N'); err != nil {
		return result{}, fmt.Errorf("eoh: %w", err)
	}
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 65535)
		if err := c.event(smfipNoBody, smfipNRBody, 'B', rest[:n]); err != nil {
			return result{}, fmt.Errorf("body: %w", err)
		}
		rest = rest[n:]
	}
	c.send('D', []byte{'E'}, cstr("i", "4LOADTEST"))
	c.send('E')
	if err := c.flush(); err != nil {
		return result{}, err
	}
	var res result
loop:
	for {
		code, data, err := c.read()
		if err != nil {
			return result{}, fmt.Errorf("end of message: %w", err)
		}
		switch code {
		case 'p':
			continue
		case 'h', 'i', 'm', '+', '-', 'b', 'e', 'q', '2':
			res.mods++
			continue
		case 'y':
			res.text = string(bytes.TrimRight(data, "\x00"))
		}
		res.final = code
		break loop
	}
	// smtpd resets the milter between transactions.
	c.send('A')
	return res, nil
}

// splitMessage splits a message into header fields (folded lines kept,
// with LF as Postfix sends them) and a CRLF body.
func splitMessage(msg []byte) ([]header, []byte, error) {
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	head, body, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		return nil, nil, errors.New("message has no blank line after the header")
	}
	var hs []header
	for _, line := range bytes.Split(head, []byte("\n")) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && len(hs) > 0 {
			hs[len(hs)-1].value += "\n" + string(line)
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, nil, fmt.Errorf("bad header line %q", line)
		}
		hs = append(hs, header{string(name), string(value)})
	}
	return hs, bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")), nil
}
