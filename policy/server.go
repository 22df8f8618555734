package policy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"postgate/internal/listen"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policy: server closed")

// Server defaults.
const (
	// DefaultIdleTimeout matches Postfix's smtpd_policy_service_max_idle.
	DefaultIdleTimeout = 300 * time.Second
	// DefaultReadTimeout bounds reading one request once its first byte
	// came (Postfix writes a request at once; this catches stuck clients).
	DefaultReadTimeout = 100 * time.Second
	// DefaultWriteTimeout bounds writing one reply.
	DefaultWriteTimeout = 30 * time.Second
)

// ServerOptions configure a Server. Zero fields take defaults.
type ServerOptions struct {
	Limits       Limits
	IdleTimeout  time.Duration // between requests; DefaultIdleTimeout
	ReadTimeout  time.Duration // for one request; DefaultReadTimeout
	WriteTimeout time.Duration // for one reply; DefaultWriteTimeout
	Logger       *slog.Logger  // nil: slog.Default()
	Metrics      *Metrics      // nil: unregistered metrics
}

// Server speaks the policy delegation protocol on any number of listeners
// (TCP or unix), many requests per connection.
type Server struct {
	pipeline atomic.Pointer[Pipeline]
	opts     ServerOptions
	log      *slog.Logger
	metrics  *Metrics

	shutting  atomic.Bool
	listeners listen.Set
	mu        sync.Mutex
	conns     map[*serverConn]struct{}
}

// NewServer returns a server answering with p (not nil).
func NewServer(p *Pipeline, opts ServerOptions) *Server {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	opts.Limits = opts.Limits.withDefaults()
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		metrics: opts.Metrics,
		conns:   make(map[*serverConn]struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	s.pipeline.Store(p)
	return s
}

// SetPipeline replaces the pipeline (configuration reload). Requests
// already being decided finish on the old one; later ones use p. Give both
// pipelines the same Metrics and HeaderCache to keep counters and pending
// headers across the swap.
func (s *Server) SetPipeline(p *Pipeline) { s.pipeline.Store(p) }

// Serve accepts connections on l until Shutdown (then it returns
// ErrServerClosed) or a permanent accept error. It closes l on return.
func (s *Server) Serve(l net.Listener) error {
	if !s.listeners.Add(l) {
		return ErrServerClosed
	}
	defer s.listeners.Remove(l)

	for {
		nc, err := listen.Accept(l, s.shutting.Load, func(err error, pause time.Duration) {
			s.log.Error("policy accept failed; retrying", "error", err, "retry_in", pause)
		})
		if errors.Is(err, listen.ErrStopped) {
			return ErrServerClosed
		}
		if err != nil {
			return err
		}
		c := &serverConn{nc: nc, idle: true}
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, lets requests in progress finish (their reply
// is written), closes idle connections and returns when all connections are
// gone. When ctx ends first it closes the remaining connections and returns
// ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.listeners.Close()

	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.interruptIfIdle()
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.nc.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.metrics.connections.Inc()
	return true
}

func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.metrics.connections.Dec()
}

// serverConn is one client connection.
type serverConn struct {
	nc   net.Conn
	mu   sync.Mutex // guards idle against Shutdown's interrupt
	idle bool
}

// waitIdle marks c idle and arms the idle deadline, unless the server is
// shutting down (then it reports false). Holding c.mu makes this atomic
// with interruptIfIdle: whichever runs second wins, and both outcomes
// close the connection promptly.
func (c *serverConn) waitIdle(s *Server) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	c.idle = true
	c.nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
	return true
}

// busy marks c as working on a request; Shutdown waits for it.
func (c *serverConn) busy(readTimeout time.Duration) {
	c.mu.Lock()
	c.idle = false
	c.nc.SetReadDeadline(time.Now().Add(readTimeout))
	c.mu.Unlock()
}

func (c *serverConn) interruptIfIdle() {
	c.mu.Lock()
	if c.idle {
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
}

func (s *Server) serveConn(c *serverConn) {
	defer s.untrack(c)
	defer c.nc.Close()
	remote := c.nc.RemoteAddr().String()
	defer func() {
		if v := recover(); v != nil {
			s.protocolError("panic", "policy connection panicked; closed",
				"remote", remote, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	br := bufio.NewReaderSize(c.nc, 4096)
	out := make([]byte, 0, 256)
	for {
		if !c.waitIdle(s) {
			return
		}
		if _, err := br.Peek(1); err != nil {
			if !s.shutting.Load() {
				s.connEnded(err, remote, true)
			}
			return
		}
		c.busy(s.opts.ReadTimeout)
		req, err := ReadRequest(br, s.opts.Limits)
		var action string
		var pe *ProtocolError
		switch {
		case err == nil:
			action = s.decide(req)
		case errors.As(err, &pe):
			if pe.Fatal() {
				s.protocolError(pe.Kind(), "policy protocol error; connection closed",
					"remote", remote, "line", pe.Line, "error", pe.Err.Error())
				return
			}
			// The request was read to its end: answer so the client
			// is not left waiting, and go on.
			action = "DUNNO"
			s.metrics.requests.WithLabelValues("DUNNO", ReasonMalformed).Inc()
			s.protocolError(pe.Kind(), "policy protocol error",
				"remote", remote, "line", pe.Line, "error", pe.Err.Error(), "action", action)
		default:
			s.connEnded(err, remote, false)
			return
		}
		// The pipeline sanitizes already; this guards every path (cheap
		// for the clean ASCII replies of the fast path).
		out = append(append(append(out[:0], "action="...), sanitizeReply(action)...), "\n\n"...)
		c.nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		// One write per reply: split writes stall on TCP (Nagle + delayed ACK).
		if _, err := c.nc.Write(out); err != nil {
			s.protocolError("io", "policy reply not written; connection closed", "remote", remote, "error", err.Error())
			return
		}
	}
}

// decide runs the current pipeline; a panic outside the checks (which are
// already guarded) still gets an answer.
func (s *Server) decide(req *Request) (action string) {
	p := s.pipeline.Load()
	defer func() {
		if v := recover(); v != nil {
			action = "DUNNO"
			s.metrics.requests.WithLabelValues("DUNNO", ReasonPanic).Inc()
			s.protocolError("panic", "policy decision panicked; answered DUNNO",
				"queue_id", req.QueueID, "client", clientString(req), "panic", v, "stack", string(debug.Stack()))
		}
	}()
	return p.Decide(context.Background(), req).Action
}

// connEnded logs why a connection ended outside the protocol: EOF between
// requests is normal (debug), an idle timeout too; a timeout inside a
// request or an I/O error is a protocol error.
func (s *Server) connEnded(err error, remote string, betweenRequests bool) {
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		s.log.Debug("policy connection closed by client", "remote", remote)
	case errors.Is(err, os.ErrDeadlineExceeded) && betweenRequests:
		s.log.Debug("policy connection idle; closed", "remote", remote)
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.protocolError("timeout", "policy request not complete in time; connection closed", "remote", remote)
	default:
		s.protocolError("io", "policy connection read failed; closed", "remote", remote, "error", err.Error())
	}
}

func (s *Server) protocolError(kind, msg string, args ...any) {
	s.metrics.protocolErrors.WithLabelValues(kind).Inc()
	level := slog.LevelWarn
	if kind == "panic" {
		level = slog.LevelError
	}
	s.log.Log(context.Background(), level, msg, append([]any{"kind", kind}, args...)...)
}
