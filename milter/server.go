// Package milter is postgate's DKIM milter: it signs mail that originates
// here and verifies everything else, on top of github.com/emersion/go-milter
// and the dkim package.
//
// # Sign or verify
//
// A message is signed when it originates here AND its author (the address in
// its single From: field, see dkim.Author) has keys in the Keyring. It
// originates here when any of these holds:
//
//   - {auth_authen} was set at MAIL FROM (the client did SMTP AUTH);
//   - {daemon_name}, sent by Postfix at connect (milter_macro_daemon_name),
//     is one of OriginatingDaemons (the submission service);
//   - the client address sent at connect is in InternalNetworks;
//   - the message is a local submission (sendmail(1)/pickup through
//     non_smtpd_milters): Postfix's cleanup presents those as a connection
//     from host "localhost", address 127.0.0.1, port 0, family inet. No SMTP
//     client can produce port 0, so this holds even if loopback is removed
//     from InternalNetworks.
//
// Everything else is verified, including originating mail whose author has
// no key (as OpenDKIM does). A message from an outside client that merely
// claims one of our domains in From: is verified, never signed: the milter
// is not a signing oracle.
//
// Verifying removes every Authentication-Results field carrying our
// authserv-id (dkim.HasAuthServID: any case, comments allowed), deleting from
// the highest index down because a deletion shifts the later ones, then
// inserts ours at the very top. The verdict of a verified message is Accept
// if any signature passes; otherwise each result maps to an Action through
// Options.Verdicts (missing: accept) and the mildest wins (accept, then
// tempfail, then reject): a message is rejected only if every one of its
// signatures calls for it.
//
// # go-milter
//
// The server answers milter protocol version 2 (go-milter's), but negotiates
// the version 6 extensions Postfix honours with it: the header leading-space
// option (SMFIP_HDR_LEADSPC) so header values arrive byte-exact, no reply per
// header, end of headers and body chunk (SMFIP_NR_*) so a message costs two
// round trips instead of one per header and chunk, skipping HELO, RCPT,
// DATA and unknown commands, and the macro lists it needs per stage
// (SMFIF_SETSYMLIST). Each is asked for only when the MTA offers it: the
// MTA's OPTNEG is read before go-milter sees it. Without the leading-space
// option the space Postfix strips after the colon is put back.
//
// go-milter replaces its macro map on every macro packet and makes a fresh
// backend after every final answer; connection data (client, daemon name)
// therefore lives per connection, outside the backend, and message data
// (auth, queue id) is copied as each stage arrives.
package milter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"postgate/internal/listen"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("milter: server closed")

// Server is a DKIM milter. It is safe for concurrent use.
type Server struct {
	cfg     atomic.Pointer[config]
	metrics *metrics

	listeners listen.Set
	mu        sync.Mutex
	conns     map[*conn]struct{}
	draining  atomic.Bool // set under mu, read without it
	wg        sync.WaitGroup
}

// NewServer returns a server with opts; it fails only on invalid options.
func NewServer(opts Options) (*Server, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Server{
		metrics: newMetrics(opts.Registerer),
		conns:   make(map[*conn]struct{}),
	}
	s.cfg.Store(cfg)
	return s, nil
}

// SetOptions replaces the options (a reload: new keys, new verdicts). A
// message in progress finishes with the options it started with. The
// Registerer is ignored. On error the old options stay.
func (s *Server) SetOptions(opts Options) error {
	cfg, err := newConfig(opts)
	if err != nil {
		return err
	}
	s.cfg.Store(cfg)
	return nil
}

// Serve accepts MTA connections on l (TCP or unix) until Shutdown, and then
// returns ErrServerClosed. It closes l.
func (s *Server) Serve(l net.Listener) error {
	if !s.listeners.Add(l) {
		return ErrServerClosed
	}
	defer s.listeners.Remove(l)

	for {
		nc, err := listen.Accept(l, s.draining.Load, func(err error, pause time.Duration) {
			s.cfg.Load().log.Warn("milter: accept", "err", err, "retry_in", pause)
		})
		if errors.Is(err, listen.ErrStopped) {
			return ErrServerClosed
		}
		if err != nil {
			return err
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			// Go's default, made explicit: Postfix waits for every reply, and
			// Nagle's algorithm with delayed ACKs stalls each one ~40 ms.
			tc.SetNoDelay(true)
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.draining.Load() {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting connections, closes idle ones (between two
// messages) and lets the others finish the message they are in, then closes
// them. When ctx ends first, the remaining connections are closed and
// ctx.Err() is returned. Postfix applies milter_default_action to messages
// it sends after the connection closes.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	s.listeners.Close()
	for c := range s.conns {
		c.kick()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Conn.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// conn is one MTA connection. It outlives go-milter's backends (one per
// message), holds what the MTA said at connect, and puts deadlines on the
// socket.
type conn struct {
	net.Conn
	srv *Server
	br  *bufio.Reader // buffers the MTA's packets: with no-reply headers, many per read

	// Set at connect, read by the backends of later messages.
	connect connInfo
	// Negotiated with the MTA.
	leadSpace bool // header values keep their leading space
	noReply   gomilter.OptProtocol

	inMessage atomic.Bool // between MAIL FROM and end of message / abort
	kicked    atomic.Bool // Shutdown woke a blocked read
	closeOnce sync.Once
	closed    chan struct{}
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{Conn: nc, srv: s, closed: make(chan struct{})}
	c.br = bufio.NewReaderSize(deadlineReader{c}, 16<<10)
	return c
}

// deadlineReader reads the raw socket with the read deadline.
type deadlineReader struct{ c *conn }

func (d deadlineReader) Read(p []byte) (int, error) {
	c := d.c
	cfg := c.srv.cfg.Load()
	for {
		var deadline time.Time
		if cfg.readTimeout > 0 {
			deadline = time.Now().Add(cfg.readTimeout)
		}
		c.Conn.SetReadDeadline(deadline)
		// Checked after setting the deadline: a Shutdown from here on
		// kicks this read with a deadline in the past.
		if c.srv.draining.Load() && !c.inMessage.Load() {
			return 0, io.EOF // idle while shutting down: end the session
		}
		n, err := c.Conn.Read(p)
		if n > 0 {
			quickAck(c.Conn)
		}
		if err == nil || n > 0 {
			return n, err
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if c.kicked.Swap(false) && (deadline.IsZero() || time.Now().Before(deadline)) {
				continue // woken by Shutdown: recheck
			}
			cfg.log.Info("milter: MTA connection idle, closing", "remote", c.RemoteAddr().String(), "timeout", cfg.readTimeout)
			return 0, io.EOF // go-milter logs anything but EOF on its own
		}
		if errors.Is(err, net.ErrClosed) {
			return 0, io.EOF
		}
		return n, err
	}
}

// kick wakes a read blocked between messages so that it sees the shutdown.
func (c *conn) kick() {
	c.kicked.Store(true)
	c.Conn.SetReadDeadline(time.Now())
}

func (c *conn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *conn) Write(p []byte) (int, error) {
	if wt := c.srv.cfg.Load().writeTimeout; wt > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(wt))
	}
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
}

// serve runs the milter protocol on the connection until the MTA quits.
func (c *conn) serve() {
	s := c.srv
	s.metrics.connections.Inc()
	defer func() {
		c.Close()
		s.metrics.connections.Dec()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()

	// Peek at the MTA's OPTNEG (left in the buffer for go-milter) to ask
	// only for the protocol options the MTA offers.
	hdr, err := c.br.Peek(4)
	if err != nil {
		return
	}
	n := binary.BigEndian.Uint32(hdr)
	if n < 1 || n > 1024 {
		s.cfg.Load().log.Warn("milter: bad first packet from MTA", "remote", c.RemoteAddr().String(), "length", n)
		return
	}
	pkt, err := c.br.Peek(4 + int(n))
	if err != nil {
		return
	}
	offer, err := parseOptNeg(pkt[4:])
	if err != nil {
		s.cfg.Load().log.Warn("milter: bad option negotiation from MTA", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	neg := negotiate(offer)
	c.leadSpace = neg.protocol&gomilter.OptHeaderLeadingSpace != 0
	c.noReply = neg.protocol

	ms := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &backend{conn: c} },
		Actions:   neg.actions,
		Protocol:  neg.protocol,
	}
	if neg.actions&gomilter.OptSetSymList != 0 {
		ms.SymList = symList
	}
	// go-milter's Serve runs a session per accepted connection: hand it
	// this one, and return when it is done with it.
	ms.Serve(&oneConnListener{c: c})
}

// oneConnListener yields one connection, then blocks until it is closed.
type oneConnListener struct {
	c    *conn
	done bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.done {
		l.done = true
		return l.c, nil
	}
	<-l.c.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }
