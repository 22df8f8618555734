package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink is the SMTP server Postfix delivers to (transport_maps sends every
// address to it). It stores each message as received, headers and all, so a
// test sees exactly what a mailbox would.
type sink struct {
	ln net.Listener

	mu      sync.Mutex
	msgs    []*delivered
	changed chan struct{} // closed and replaced when a message arrives
}

// delivered is one message Postfix delivered to the sink.
type delivered struct {
	From string
	To   []string
	Data []byte // as sent by Postfix, dot-unstuffed, CRLF line ends
}

// header returns the parsed header of the message.
func (m *delivered) header() mail.Header {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return mail.Header{}
	}
	return msg.Header
}

// headerBlock returns the raw header section (up to the empty line).
func (m *delivered) headerBlock() string {
	s := string(m.Data)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		return s[:i+2]
	}
	return s
}

func startSink(t *testing.T) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	s := &sink{ln: ln, changed: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(c)
			}()
		}
	}()
	return s
}

func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	reply := func(format string, args ...any) bool {
		_, err := fmt.Fprintf(c, format+"\r\n", args...)
		return err == nil
	}
	if !reply("220 sink.test ESMTP e2e sink") {
		return
	}
	var cur *delivered
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			reply("250-sink.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
		case "HELO":
			reply("250 sink.test")
		case "MAIL":
			cur = &delivered{From: addrArg(arg)}
			reply("250 2.1.0 Ok")
		case "RCPT":
			if cur == nil {
				reply("503 5.5.1 MAIL first")
				continue
			}
			cur.To = append(cur.To, addrArg(arg))
			reply("250 2.1.5 Ok")
		case "DATA":
			if cur == nil || len(cur.To) == 0 {
				reply("503 5.5.1 RCPT first")
				continue
			}
			reply("354 End data with <CR><LF>.<CR><LF>")
			data, err := readData(r)
			if err != nil {
				return
			}
			cur.Data = data
			s.add(cur)
			cur = nil
			reply("250 2.0.0 Ok: stored")
		case "RSET":
			cur = nil
			reply("250 2.0.0 Ok")
		case "NOOP":
			reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("502 5.5.2 Unknown command")
		}
	}
}

// addrArg extracts the address from "FROM:<a@b> SIZE=1" or "TO:<a@b>".
func addrArg(arg string) string {
	i, j := strings.IndexByte(arg, '<'), strings.IndexByte(arg, '>')
	if i < 0 || j < i {
		return arg
	}
	return arg[i+1 : j]
}

// readData reads a DATA section up to the lone dot, undoing dot-stuffing.
// Lines are kept with CRLF ends, as on the wire.
func readData(r *bufio.Reader) ([]byte, error) {
	var buf bytes.Buffer
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		body := strings.TrimRight(line, "\r\n")
		if body == "." {
			return buf.Bytes(), nil
		}
		if strings.HasPrefix(body, ".") {
			body = body[1:]
		}
		buf.WriteString(body)
		buf.WriteString("\r\n")
	}
}

func (s *sink) add(m *delivered) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// find returns the messages whose raw data contains token.
func (s *sink) find(token string) []*delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*delivered
	for _, m := range s.msgs {
		if bytes.Contains(m.Data, []byte(token)) {
			out = append(out, m)
		}
	}
	return out
}

// wait returns the first message containing token, waiting up to timeout
// for Postfix to deliver it.
func (s *sink) wait(token string, timeout time.Duration) (*delivered, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if ms := s.find(token); len(ms) > 0 {
			return ms[0], nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return nil, fmt.Errorf("no message with %q delivered to the sink within %v", token, timeout)
		}
	}
}
