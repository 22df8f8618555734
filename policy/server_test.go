package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type testServer struct {
	*Server
	addr    string
	logs    *syncBuffer
	metrics *Metrics
	served  chan error
}

func startServer(t *testing.T, network string, opts ServerOptions, checks ...Check) *testServer {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "policy.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testLogger()
	m := NewMetrics(nil)
	opts.Logger, opts.Metrics = log, m
	p := NewPipeline(PipelineOptions{Logger: log, Metrics: m}, checks...)
	ts := &testServer{Server: NewServer(p, opts), addr: l.Addr().String(), logs: logs, metrics: m, served: make(chan error, 1)}
	go func() { ts.served <- ts.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-ts.served:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return ts
}

type testClient struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, network, addr string) *testClient {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second)) // no test hangs
	return &testClient{Conn: c, r: bufio.NewReader(c)}
}

// readReply reads "action=..." and the empty line after it.
func (c *testClient) readReply() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	empty, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok || empty != "\n" {
		return "", fmt.Errorf("bad reply %q %q", line, empty)
	}
	return action, nil
}

func (c *testClient) ask(t *testing.T, req string) string {
	t.Helper()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	action, err := c.readReply()
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	return action
}

// echoCheck defers with the recipient in the text, so each reply can be
// matched with its request.
var echoCheck = checkFunc{"echo", func(_ context.Context, req *Request, d *Decision) error {
	d.DeferIfPermit("rcpt "+req.Recipient, "echo")
	return nil
}}

// waitFor polls cond, bounded.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestServerRequestsPerConnection(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{}, echoCheck)
	c := dial(t, "tcp", ts.addr)
	for i := range 20 {
		rcpt := fmt.Sprintf("user%d@example.net", i)
		if got, want := c.ask(t, request(map[string]string{"recipient": rcpt})), "DEFER_IF_PERMIT 4.2.0 rcpt "+rcpt; got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
		if got := c.ask(t, postfixDATA); got != "DUNNO" {
			t.Fatalf("DATA %d: %q", i, got)
		}
	}
	// Every request of the same connection also in one write.
	if _, err := c.Write([]byte(postfixRCPT + postfixDATA + postfixRCPT)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DEFER_IF_PERMIT", "DUNNO", "DEFER_IF_PERMIT"} {
		if got, err := c.readReply(); err != nil || !strings.HasPrefix(got, want) {
			t.Fatalf("pipelined: %q %v, want %s", got, err, want)
		}
	}
	if n := len(ts.logs.lines("msg=decision")); n != 43 {
		t.Errorf("%d decision lines for 43 requests", n)
	}
}

func TestServerMalformedAndUnknown(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{}, echoCheck)
	c := dial(t, "tcp", ts.addr)
	if got := c.ask(t, "request=smtpd_access_policy\nthis line has no equals sign\nrecipient=x@y\n\n"); got != "DUNNO" {
		t.Errorf("malformed: %q", got)
	}
	// postgrey stays silent here; we answer.
	if got := c.ask(t, "request=something_else\nprotocol_state=RCPT\n\n"); got != "DUNNO" {
		t.Errorf("unknown request: %q", got)
	}
	if got := c.ask(t, "\n"); got != "DUNNO" {
		t.Errorf("empty request: %q", got)
	}
	if got := c.ask(t, postfixRCPT); !strings.HasPrefix(got, "DEFER_IF_PERMIT") {
		t.Errorf("after errors: %q", got)
	}
	if v := counterValue(t, ts.metrics.protocolErrors.WithLabelValues("malformed")); v != 1 {
		t.Errorf("protocol_errors{malformed} = %v", v)
	}
	if v := counterValue(t, ts.metrics.requests.WithLabelValues("DUNNO", ReasonUnknownRequest)); v != 2 {
		t.Errorf("requests{DUNNO,unknown_request} = %v", v)
	}
	if l := ts.logs.lines("level=WARN", "kind=malformed", "line=2", "action=DUNNO"); len(l) != 1 {
		t.Errorf("malformed log:\n%s", ts.logs)
	}
}

func TestServerLimitsCloseConnection(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{Limits: Limits{MaxLineLength: 200, MaxAttributes: 40, MaxRequestSize: 2000}}, echoCheck)
	tests := []struct{ kind, req string }{
		{"line_too_long", "request=smtpd_access_policy\nsender=" + strings.Repeat("x", 5000) + "\n\n"},
		{"too_many_attributes", strings.Repeat("x_attr=1\n", 41) + "\n"},
		{"request_too_large", strings.Repeat("x_attr="+strings.Repeat("v", 150)+"\n", 14) + "\n"},
		{"line_too_long", strings.Repeat("z", 1<<20)}, // never ends: memory stays bounded
	}
	for _, tt := range tests {
		bad := dial(t, "tcp", ts.addr)
		go bad.Write([]byte(tt.req)) // may fail once the server closes
		if got, err := bad.readReply(); err == nil {
			t.Errorf("%s: got reply %q, want the connection closed", tt.kind, got)
		}
		// The server still serves others.
		good := dial(t, "tcp", ts.addr)
		if got := good.ask(t, postfixRCPT); !strings.HasPrefix(got, "DEFER_IF_PERMIT") {
			t.Errorf("%s: other connection got %q", tt.kind, got)
		}
	}
	for kind, want := range map[string]float64{"line_too_long": 2, "too_many_attributes": 1, "request_too_large": 1} {
		if v := counterValue(t, ts.metrics.protocolErrors.WithLabelValues(kind)); v != want {
			t.Errorf("protocol_errors{%s} = %v, want %v", kind, v, want)
		}
		if l := ts.logs.lines("connection closed", "kind="+kind); len(l) != int(want) {
			t.Errorf("%s: %d log lines", kind, len(l))
		}
	}
}

func TestServerEOFMidRequest(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{}, echoCheck)
	c := dial(t, "tcp", ts.addr)
	c.Write([]byte("request=smtpd_access_policy\nprotocol_state=RC"))
	c.Conn.(*net.TCPConn).CloseWrite()
	if got, err := c.readReply(); err == nil {
		t.Fatalf("got reply %q to half a request", got)
	}
	waitFor(t, "truncated log", func() bool { return len(ts.logs.lines("kind=truncated")) == 1 })
	if got := dial(t, "tcp", ts.addr).ask(t, postfixRCPT); !strings.HasPrefix(got, "DEFER_IF_PERMIT") {
		t.Errorf("next connection: %q", got)
	}
}

func TestServerSlowClient(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{ReadTimeout: 300 * time.Millisecond}, echoCheck)
	c := dial(t, "tcp", ts.addr)
	req := []byte(postfixRCPT)
	for i := 0; i < len(req); i += 64 { // a request trickling in pieces
		c.Write(req[i:min(i+64, len(req))])
		time.Sleep(time.Millisecond)
	}
	if got, err := c.readReply(); err != nil || !strings.HasPrefix(got, "DEFER_IF_PERMIT") {
		t.Fatalf("trickled request: %q %v", got, err)
	}
	// A client that stops mid-request is cut off after ReadTimeout.
	c.Write([]byte("request=smtpd_access_policy\n"))
	if got, err := c.readReply(); err == nil {
		t.Fatalf("stalled request answered %q", got)
	}
	waitFor(t, "timeout log", func() bool { return len(ts.logs.lines("kind=timeout")) == 1 })
}

func TestServerIdleTimeout(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{IdleTimeout: 100 * time.Millisecond}, echoCheck)
	c := dial(t, "tcp", ts.addr)
	c.ask(t, postfixRCPT)
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("idle connection not closed")
	}
	waitFor(t, "connections gauge back to 0", func() bool {
		return counterValue(t, ts.metrics.connections) == 0
	})
	if len(ts.logs.lines("level=DEBUG", "idle")) != 1 {
		t.Errorf("idle close not logged:\n%s", ts.logs)
	}
}

func TestServerConcurrentConnections(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{}, echoCheck)
	const conns, perConn = 40, 25
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			tc := &testClient{Conn: c, r: bufio.NewReader(c)}
			for j := range perConn {
				rcpt := fmt.Sprintf("c%d-r%d@example.net", i, j)
				if _, err := c.Write([]byte(request(map[string]string{"recipient": rcpt}))); err != nil {
					errs <- err
					return
				}
				got, err := tc.readReply()
				if want := "DEFER_IF_PERMIT 4.2.0 rcpt " + rcpt; err != nil || got != want {
					errs <- fmt.Errorf("conn %d req %d: %q %v, want %q", i, j, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v := counterValue(t, ts.metrics.requests.WithLabelValues("DEFER_IF_PERMIT", "echo")); v != conns*perConn {
		t.Errorf("requests counted %v, want %d", v, conns*perConn)
	}
	waitFor(t, "connections gauge back to 0", func() bool {
		return counterValue(t, ts.metrics.connections) == 0
	})
}

func TestServerCheckPanicAndBadPipeline(t *testing.T) {
	ts := startServer(t, "tcp", ServerOptions{}, checkFunc{"boom", func(context.Context, *Request, *Decision) error {
		panic("check bug")
	}})
	c := dial(t, "tcp", ts.addr)
	if got := c.ask(t, postfixRCPT); got != "DUNNO" {
		t.Errorf("panicking check: %q", got)
	}
	if l := ts.logs.lines("level=ERROR", "check=boom", `error="panic: check bug"`); len(l) != 1 {
		t.Errorf("panic log:\n%s", ts.logs)
	}
	// A panic outside the checks (here: no pipeline at all) still gets DUNNO.
	ts.SetPipeline(nil)
	if got := c.ask(t, postfixRCPT); got != "DUNNO" {
		t.Errorf("nil pipeline: %q", got)
	}
	if v := counterValue(t, ts.metrics.protocolErrors.WithLabelValues("panic")); v != 1 {
		t.Errorf("protocol_errors{panic} = %v", v)
	}
	if got := c.ask(t, postfixRCPT); got != "DUNNO" {
		t.Errorf("connection unusable after a panic: %q", got)
	}
}

// blockingCheck signals when a request reaches it and waits for release.
func blockingCheck(entered chan<- string, release <-chan struct{}, answer string) Check {
	return checkFunc{"block", func(ctx context.Context, req *Request, d *Decision) error {
		entered <- req.Recipient
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		d.DeferIfPermit(answer, "test")
		return nil
	}}
}

func TestServerShutdownFinishesInFlight(t *testing.T) {
	entered, release := make(chan string, 1), make(chan struct{})
	ts := startServer(t, "tcp", ServerOptions{}, blockingCheck(entered, release, "in flight"))
	idle := dial(t, "tcp", ts.addr)
	busy := dial(t, "tcp", ts.addr)
	busy.Write([]byte(postfixRCPT))
	<-entered
	waitFor(t, "two connections", func() bool { return counterValue(t, ts.metrics.connections) == 2 })

	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()
	select {
	case err := <-ts.served:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
		ts.served <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still accepting")
	}
	if _, err := idle.r.ReadByte(); err == nil {
		t.Error("idle connection not closed by Shutdown")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if got, err := busy.readReply(); err != nil || got != "DEFER_IF_PERMIT 4.2.0 in flight" {
		t.Fatalf("in-flight reply: %q %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := busy.r.ReadByte(); err == nil {
		t.Error("connection open after Shutdown")
	}
	if c, err := net.Dial("tcp", ts.addr); err == nil {
		c.Close()
		t.Error("still accepting after Shutdown")
	}
}

func TestServerShutdownDeadline(t *testing.T) {
	entered, release := make(chan string, 1), make(chan struct{})
	defer close(release)
	ts := startServer(t, "tcp", ServerOptions{}, blockingCheck(entered, release, "x"))
	c := dial(t, "tcp", ts.addr)
	c.Write([]byte(postfixRCPT))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if _, err := c.readReply(); err == nil {
		t.Error("connection not closed by a forced Shutdown")
	}
}

func TestServerSetPipeline(t *testing.T) {
	entered, release := make(chan string, 1), make(chan struct{})
	ts := startServer(t, "tcp", ServerOptions{}, blockingCheck(entered, release, "old pipeline"))
	c1 := dial(t, "tcp", ts.addr)
	c1.Write([]byte(postfixRCPT))
	<-entered
	ts.SetPipeline(NewPipeline(PipelineOptions{Logger: discardLogger()}, checkFunc{"new", func(_ context.Context, _ *Request, d *Decision) error {
		d.Reject("550 5.7.1 new pipeline", "x")
		return nil
	}}))
	if got := dial(t, "tcp", ts.addr).ask(t, postfixRCPT); got != "550 5.7.1 new pipeline" {
		t.Errorf("after SetPipeline: %q", got)
	}
	close(release)
	if got, err := c1.readReply(); err != nil || got != "DEFER_IF_PERMIT 4.2.0 old pipeline" {
		t.Errorf("in-flight request: %q %v", got, err)
	}
	if got := c1.ask(t, postfixRCPT); got != "550 5.7.1 new pipeline" {
		t.Errorf("same connection after SetPipeline: %q", got)
	}
}

func TestServerUnixSocket(t *testing.T) {
	ts := startServer(t, "unix", ServerOptions{}, echoCheck)
	c := dial(t, "unix", ts.addr)
	for range 3 {
		if got := c.ask(t, postfixRCPT); got != "DEFER_IF_PERMIT 4.2.0 rcpt Bob@example.net" {
			t.Fatalf("unix: %q", got)
		}
	}
}
