package policy

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
)

// BenchmarkParseAndReply reads a realistic Postfix 3.8 RCPT request, decides
// it with a greylisting-like check adding a header, and formats the reply.
func BenchmarkParseAndReply(b *testing.B) {
	p := NewPipeline(PipelineOptions{Logger: discardLogger()}, checkFunc{"greylist",
		func(_ context.Context, req *Request, d *Decision) error {
			d.DeferIfPermit("Greylisted, see http://postgrey.schweikert.ch/help/"+req.Recipient+".html", "new")
			return nil
		}})
	src := strings.NewReader(postfixRCPT)
	r := bufio.NewReader(src)
	out := make([]byte, 0, 256)
	b.SetBytes(int64(len(postfixRCPT)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(postfixRCPT)
		r.Reset(src)
		req, err := ReadRequest(r, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		action := p.Decide(context.Background(), req).Action
		out = append(append(append(out[:0], "action="...), action...), "\n\n"...)
	}
}

// BenchmarkReadRequest is the parser alone.
func BenchmarkReadRequest(b *testing.B) {
	src := strings.NewReader(postfixRCPT)
	r := bufio.NewReader(src)
	b.SetBytes(int64(len(postfixRCPT)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(postfixRCPT)
		r.Reset(src)
		if _, err := ReadRequest(r, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerRoundTrip is one request/reply over loopback TCP per
// iteration, one connection per parallel goroutine, trivial pipeline.
func BenchmarkServerRoundTrip(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := NewPipeline(PipelineOptions{Logger: discardLogger()}, &countingCheck{})
	s := NewServer(p, ServerOptions{Logger: discardLogger()})
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	req := []byte(postfixRCPT)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		tc := &testClient{Conn: c, r: bufio.NewReader(c)}
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if action, err := tc.readReply(); err != nil || action != "DUNNO" {
				b.Errorf("reply %q %v", action, err)
				return
			}
		}
	})
}
