// Command milterload drives a milter (postgate's, OpenDKIM, any) with
// messages the way Postfix does, and prints messages per second and latency
// percentiles.
//
//	milterload -addr unix:/run/opendkim.sock -conns 8 -duration 10s -mode sign
//	milterload -addr inet:127.0.0.1:8892 -mode verify -message signed.eml
//
// Each connection negotiates like Postfix with milter_protocol = 6 (it
// offers every option and honours what the milter takes: skipped events, no
// reply per header or body chunk, leading space), sends the connect, MAIL
// and end-of-message macros Postfix sends, and runs messages back to back:
// MAIL, RCPT, DATA, headers, body in 64 KB chunks, end of message, then
// ABORT as Postfix's smtpd does between transactions. Latency is measured
// from MAIL to the final reply.
//
// Modes: sign sends an authenticated submission ({auth_authen},
// {daemon_name}=ORIGINATING) of a -size byte message From: -from; verify
// sends -message (a pre-signed message file) from an outside client.
//
// -serve ADDR runs postgate's milter itself on ADDR (signing with -key for
// -domain/-selector) instead of driving one, so it can be measured beside
// another milter without the daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"postgate/dkim"
	"postgate/internal/resolver"
	"postgate/milter"
)

func main() {
	var (
		addr     = flag.String("addr", "inet:127.0.0.1:8892", "milter address: inet:HOST:PORT or unix:/PATH")
		conns    = flag.Int("conns", 8, "concurrent milter connections")
		messages = flag.Int("messages", 100000, "stop after this many messages in all")
		duration = flag.Duration("duration", 10*time.Second, "stop after this long")
		mode     = flag.String("mode", "sign", "sign (authenticated submission) or verify (pre-signed message from outside)")
		size     = flag.Int("size", 2048, "message size in bytes (sign mode)")
		from     = flag.String("from", "alice@example.com", "From: address (sign mode)")
		msgFile  = flag.String("message", "", "message file to send (verify mode; LF or CRLF)")
		serve    = flag.String("serve", "", "run postgate's milter on this address instead of driving one")
		keyFile  = flag.String("key", "", "private key for -serve")
		domain   = flag.String("domain", "example.com", "signing domain for -serve")
		selector = flag.String("selector", "sel", "selector for -serve")
		dnsAddr  = flag.String("dns", "", "DNS server host:port for -serve's key lookups (default: resolv.conf)")
	)
	flag.Parse()
	if *serve != "" {
		if err := runServer(*serve, *keyFile, *domain, *selector, *dnsAddr); err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			os.Exit(1)
		}
		return
	}
	network, address, err := parseAddr(*addr)
	if err != nil {
		fatal(err)
	}
	var msg []byte
	var macros []string
	var cl clientInfo
	switch *mode {
	case "sign":
		msg = makeMessage(*from, *size)
		macros = []string{"i", "4LOADTEST", "{auth_type}", "PLAIN", "{auth_authen}", "alice"}
		cl = clientInfo{host: "laptop.example.net", addr: "198.51.100.7", port: 40000, daemon: "ORIGINATING"}
	case "verify":
		if *msgFile == "" {
			fatal(errors.New("-mode verify needs -message FILE (a signed message)"))
		}
		if msg, err = os.ReadFile(*msgFile); err != nil {
			fatal(err)
		}
		macros = []string{"i", "4LOADTEST"}
		cl = clientInfo{host: "mail.outside.example", addr: "192.0.2.10", port: 40000, daemon: "smtpd"}
	default:
		fatal(fmt.Errorf("unknown -mode %q", *mode))
	}
	headers, body, err := splitMessage(msg)
	if err != nil {
		fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()

	var (
		budget    atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		mods      atomic.Int64
		errs      atomic.Int64
		firstErr  atomic.Value
		wg        sync.WaitGroup
	)
	budget.Store(int64(*messages))
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			defer func() {
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			}()
			c, err := dial(network, address, cl)
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer c.close()
			for ctx.Err() == nil && budget.Add(-1) >= 0 {
				t0 := time.Now()
				res, err := c.message(headers, body, macros)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if res.final != 'a' && res.final != 'c' {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("final reply %q %s", res.final, res.text))
				}
				local = append(local, time.Since(t0))
				mods.Add(int64(res.mods))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	report(*addr, *mode, *conns, len(msg), latencies, elapsed, errs.Load(), firstErr.Load())
	if len(latencies) > 0 {
		fmt.Printf("header modifications per message %.2f\n", float64(mods.Load())/float64(len(latencies)))
	}
}

func report(addr, mode string, conns, size int, lat []time.Duration, elapsed time.Duration, errs int64, firstErr any) {
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("milter %s mode=%s conns=%d size=%dB\n", addr, mode, conns, size)
	fmt.Printf("messages %d in %.2fs: %.0f msgs/s, errors %d\n", len(lat), elapsed.Seconds(), float64(len(lat))/elapsed.Seconds(), errs)
	fmt.Printf("latency p50 %v p90 %v p99 %v max %v\n",
		pct(.50).Round(time.Microsecond), pct(.90).Round(time.Microsecond), pct(.99).Round(time.Microsecond), pct(1).Round(time.Microsecond))
	if firstErr != nil {
		fmt.Printf("first error: %v\n", firstErr)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "milterload:", err)
	os.Exit(2)
}

// parseAddr reads Postfix's inet:host:port / unix:/path notation.
func parseAddr(a string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(a, "inet:"):
		return "tcp", strings.TrimPrefix(a, "inet:"), nil
	case strings.HasPrefix(a, "unix:"):
		return "unix", strings.TrimPrefix(a, "unix:"), nil
	case strings.HasPrefix(a, "local:"):
		return "unix", strings.TrimPrefix(a, "local:"), nil
	}
	return "", "", fmt.Errorf("address %q: want inet:HOST:PORT or unix:/PATH", a)
}

// makeMessage builds a size-byte message from from.
func makeMessage(from string, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Load Test <%s>\r\nTo: <bob@example.net>\r\nSubject: load test\r\n"+
		"Date: Sat, 21 Nov 2026 06:00:00 +0000\r\nMessage-ID: <load@example.com>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n", from)
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// runServer runs postgate's milter on addr until interrupted.
func runServer(addr, keyFile, domain, selector, dnsAddr string) error {
	network, address, err := parseAddr(addr)
	if err != nil {
		return err
	}
	var kr *dkim.Keyring
	if keyFile != "" {
		key, err := dkim.LoadKey(keyFile, domain, selector, dkim.LoadOptions{AllowGroupReadable: true})
		if err != nil {
			return err
		}
		kr = dkim.NewKeyring([]dkim.Rule{{Pattern: "*@" + domain, Key: key}})
	}
	ropts := resolver.Options{}
	if dnsAddr != "" {
		ropts.Servers = []string{dnsAddr}
	}
	res, err := resolver.New(ropts)
	if err != nil {
		return err
	}
	srv, err := milter.NewServer(milter.Options{
		Keyring:       kr,
		VerifyOptions: &dkim.VerifyOptions{Resolver: res},
		AuthservID:    "milterload.invalid",
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if network == "unix" {
		os.Remove(address)
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "milterload: postgate milter on %s\n", addr)
	if err := srv.Serve(l); !errors.Is(err, milter.ErrServerClosed) {
		return err
	}
	return nil
}
