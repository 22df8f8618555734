package bench

// TestMilterVsOpenDKIM measures postgate's DKIM milter beside OpenDKIM, the
// milter it replaces, on the same machine, key, messages and load generator
// (cmd/milterload), over unix sockets:
//
//	POSTGATE_BENCH=1 go test -v -count=1 -timeout 20m -run Milter ./tests/bench/
//
// Environment:
//
//	POSTGATE_BENCH=1               run at all (it is a measurement, not a CI test)
//	POSTGATE_BENCH_OUT=FILE        also write the markdown report to FILE
//	POSTGATE_BENCH_DURATION=10s    length of each milterload run
//	POSTGATE_BENCH_ROUNDS=1        runs per cell; the best msgs/s is reported
//	POSTGATE_BENCH_PROFILE=DIR     save CPU profiles of postgate (from its admin
//	                               listener's /debug/pprof/profile) during the
//	                               8-connection runs and a run of 10 MB messages,
//	                               and its allocation profile, into DIR
//
// It needs OpenDKIM (/usr/sbin/opendkim) and the right to listen on
// 127.0.0.2:53 (OpenDKIM's Nameservers option takes no port): root or
// CAP_NET_BIND_SERVICE.
//
// Before measuring, every milter's output is checked for real: a signing
// probe must come back with a DKIM-Signature, and each signed message (from
// either milter) must come back from both milters' verifiers with
// dkim=pass. During the load, every message must get the same number of
// header modifications as the probe got and no error or unexpected reply.
// The targets (throughput ratios, memory for a 10 MB message) are
// reported, never asserted: the numbers depend on the machine and on
// whatever else runs on it.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"postgate/internal/dnstest"
	"postgate/internal/testhost"
)

const (
	milterOpenDKIM  = "/usr/sbin/opendkim"
	milterDomain    = "example.com"
	milterSelector  = "sel"
	milterAuthserv  = "mx.example.org"
	milterFrom      = "alice@example.com"
	milterMsgSize   = 2048
	milterBigSize   = 10 << 20
	milterMaxMsgs   = 200000
	milterMemTarget = 2 << 20 // bytes of extra peak memory for a 10 MB message
	milterMemWarmup = 2000    // 2 KB messages before measuring memory (measureMemory)
	// milterOpenDKIMDNS is where OpenDKIM sends its DNS queries: its
	// Nameservers option takes no port.
	milterOpenDKIMDNS = "127.0.0.2"
)

// milterConns are the connection counts measured.
var milterConns = []int{1, 8, 32}

func TestMilterVsOpenDKIM(t *testing.T) {
	if os.Getenv("POSTGATE_BENCH") != "1" {
		t.Skip("benchmark against OpenDKIM: set POSTGATE_BENCH=1 to run it (it takes minutes and measures, it does not test)")
	}
	if _, err := os.Stat(milterOpenDKIM); err != nil {
		t.Skipf("OpenDKIM is not installed (%v): apt-get install opendkim", err)
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skipf("no /proc (%v): resident memory cannot be read", err)
	}
	duration := milterEnvDuration(t, "POSTGATE_BENCH_DURATION", 10*time.Second)
	rounds := milterEnvInt(t, "POSTGATE_BENCH_ROUNDS", 1)
	profDir := os.Getenv("POSTGATE_BENCH_PROFILE")

	e := milterSetup(t)
	rep := &milterReport{dir: e.dir}
	rep.loadBefore = testhost.LoadAvg()

	// 1. Correctness of both milters before any measurement.
	probeMods := e.probe(t)

	// 2. Memory with 10 MB messages, signed and verified.
	for _, mode := range []string{"sign", "verify"} {
		for _, m := range []*milterUnderTest{e.pg, e.od} {
			rep.mem = append(rep.mem, e.measureMemory(t, m, mode, probeMods[m.name][mode]))
		}
	}

	if profDir != "" {
		// Where postgate's time goes with 10 MB messages.
		prof := e.startProfile(t, duration, filepath.Join(profDir, "postgate-sign-10MB.pprof"))
		e.runLoad(t, e.pg, []string{e.loadBin, "-addr", e.pg.addr, "-conns", "1", "-duration", duration.String(),
			"-messages", "1000", "-mode", "sign", "-size", strconv.Itoa(milterBigSize)}, duration, probeMods[e.pg.name]["sign"])
		prof.wait(t)
		// Everything allocated since start-up, mostly by the 10 MB messages.
		e.fetch(t, "/debug/pprof/allocs", filepath.Join(profDir, "postgate-allocs.pprof"))
	}

	// 3. Throughput, postgate and OpenDKIM alternately per cell so that a
	// change of background load hits both.
	for _, mode := range []string{"sign", "verify"} {
		for _, n := range milterConns {
			row := milterRow{mode: mode, conns: n}
			for _, m := range []*milterUnderTest{e.pg, e.od} {
				var best milterResult
				for r := range rounds {
					var prof *milterProfile
					if profDir != "" && m == e.pg && n == 8 && r == 0 {
						prof = e.startProfile(t, duration, filepath.Join(profDir, fmt.Sprintf("postgate-%s-%d.pprof", mode, n)))
					}
					res := e.load(t, m, mode, n, duration, probeMods[m.name][mode])
					if prof != nil {
						prof.wait(t)
					}
					if res.rate > best.rate {
						best = res
					}
				}
				if m == e.pg {
					row.pg = best
				} else {
					row.od = best
				}
			}
			rep.rows = append(rep.rows, row)
		}
	}
	rep.loadAfter = testhost.LoadAvg()
	rep.postgateConf = e.pgConfText
	rep.opendkimConf = e.odConfText

	out := rep.markdown()
	t.Log("\n" + out)
	if path := os.Getenv("POSTGATE_BENCH_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Errorf("POSTGATE_BENCH_OUT: %v", err)
		}
	}
}

// --- environment -----------------------------------------------------------

// milterEnv is everything one benchmark run set up: binaries, key, DNS,
// both milters and the messages.
type milterEnv struct {
	dir        string // t.TempDir(), written as $DIR in the report
	pgBin      string
	loadBin    string
	pgConfig   string
	adminAddr  string
	signedMsg  string // a 2 KB message signed by `postgate dkim sign`
	signedBig  string // a 10 MB one
	pg, od     *milterUnderTest
	pgConfText string
	odConfText string
}

// milterUnderTest is one running milter.
type milterUnderTest struct {
	name string // "postgate" or "OpenDKIM"
	addr string // milterload notation: unix:/path
	proc *milterProc
}

func milterSetup(t *testing.T) *milterEnv {
	t.Helper()
	e := &milterEnv{dir: t.TempDir()}
	root := milterModuleRoot(t)
	e.pgBin = filepath.Join(e.dir, "postgate")
	e.loadBin = filepath.Join(e.dir, "milterload")
	milterBuild(t, root, "./cmd/postgate", e.pgBin)
	milterBuild(t, root, "./cmd/milterload", e.loadBin)

	// Key: postgate makes it, both milters sign with it.
	keyDir := filepath.Join(e.dir, "keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	out := milterRun(t, time.Minute, e.pgBin, "dkim", "genkey", "-d", milterDomain, "-s", milterSelector, "-D", keyDir)
	keyListLine := milterKeyListLine(t, out)
	keyPath := filepath.Join(keyDir, milterSelector+".private")
	record, err := os.ReadFile(filepath.Join(keyDir, milterSelector+".txt"))
	if err != nil {
		t.Fatalf("postgate dkim genkey wrote no record: %v", err)
	}

	// DNS: SELECTOR.txt is zone-file text relative to the domain, with the
	// key split into strings of at most 255 bytes. A TTL lets both
	// resolvers cache the key, as they do in production.
	dnsSrv := dnstest.NewServer(t, dnstest.Zone{
		"$TTL 3600",
		"$ORIGIN " + milterDomain + ".",
		"@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60",
		string(record),
	})

	// postgate.
	keyList := filepath.Join(e.dir, "keylist")
	milterWrite(t, keyList, keyListLine+"\n")
	e.adminAddr = fmt.Sprintf("127.0.0.1:%d", testhost.FreePort(t))
	pgSock := filepath.Join(e.dir, "pg.sock")
	e.pgConfText = fmt.Sprintf(`[log]
level = "warn"

[policy]
listen = ["unix:%s"]

[greylist]
enabled = false

[spf]
enabled = false

[dns]
servers = [%q]

[milter]
listen = ["unix:%s"]

[dkim]
keylist = %q
authserv_id = %q

[admin]
listen = %q
`, filepath.Join(e.dir, "policy.sock"), dnsSrv.Addr, pgSock, keyList, milterAuthserv, e.adminAddr)
	e.pgConfig = filepath.Join(e.dir, "postgate.toml")
	milterWrite(t, e.pgConfig, e.pgConfText)
	if out := milterRun(t, time.Minute, e.pgBin, "check-config", e.pgConfig); !strings.Contains(out, "OK") {
		t.Fatalf("postgate check-config: %s", out)
	}
	e.pg = &milterUnderTest{name: "postgate", addr: "unix:" + pgSock}
	e.pg.proc = milterStart(t, "postgate", filepath.Join(e.dir, "postgate.log"), e.pgBin, "serve", "-config", e.pgConfig)
	milterWaitSocket(t, e.pg.proc, pgSock)

	// OpenDKIM resolves keys with libunbound here. Nameservers takes
	// addresses only (port 53), so a forwarder on 127.0.0.2:53 passes its
	// queries to the test DNS server. (ResolverConfiguration with an
	// unbound stub-zone would take a port, but OpenDKIM parses that file
	// again from several threads at once and crashes: flex is not
	// reentrant.) It runs as root: the key is root's, 0600.
	// RequireSafeKeys no: OpenDKIM refuses a key below a directory others
	// can write to, sticky or not, and t.TempDir() is below /tmp.
	milterDNSForwarder(t, milterOpenDKIMDNS, dnsSrv.Addr)
	odSock := filepath.Join(e.dir, "od.sock")
	e.odConfText = fmt.Sprintf(`Syslog                  no
Mode                    sv
Socket                  local:%s
UMask                   007
Domain                  %s
Selector                %s
KeyFile                 %s
RequireSafeKeys         no
Canonicalization        relaxed/relaxed
OversignHeaders         From
AuthservID              %s
MTA                     ORIGINATING
Nameservers             %s
`, odSock, milterDomain, milterSelector, keyPath, milterAuthserv, milterOpenDKIMDNS)
	odConf := filepath.Join(e.dir, "opendkim.conf")
	milterWrite(t, odConf, e.odConfText)
	e.od = &milterUnderTest{name: "OpenDKIM", addr: "unix:" + odSock}
	e.od.proc = milterStart(t, "opendkim", filepath.Join(e.dir, "opendkim.log"), milterOpenDKIM, "-f", "-x", odConf)
	milterWaitSocket(t, e.od.proc, odSock)

	// The verify-mode message: milterload's sign-mode message, signed by
	// `postgate dkim sign`.
	plain := filepath.Join(e.dir, "message.eml")
	milterWrite(t, plain, string(milterMessage(milterFrom, milterMsgSize)))
	signed, err := milterOutput(time.Minute, e.pgBin, "dkim", "sign", "-config", e.pgConfig, plain)
	if err != nil {
		t.Fatalf("postgate dkim sign: %v: %s", err, signed)
	}
	if !strings.HasPrefix(signed, "DKIM-Signature:") {
		t.Fatalf("postgate dkim sign output does not start with a DKIM-Signature:\n%s", signed)
	}
	e.signedMsg = filepath.Join(e.dir, "signed.eml")
	milterWrite(t, e.signedMsg, signed)

	// And a 10 MB one, for memory while verifying.
	plain = filepath.Join(e.dir, "message-10MB.eml")
	milterWrite(t, plain, string(milterMessage(milterFrom, milterBigSize)))
	signed, err = milterOutput(time.Minute, e.pgBin, "dkim", "sign", "-config", e.pgConfig, plain)
	if err != nil || !strings.HasPrefix(signed, "DKIM-Signature:") {
		t.Fatalf("postgate dkim sign of a 10 MB message: %v: %.500s", err, signed)
	}
	e.signedBig = filepath.Join(e.dir, "signed-10MB.eml")
	milterWrite(t, e.signedBig, signed)
	return e
}

// milterModuleRoot walks up from the working directory to go.mod.
func milterModuleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	t.Fatal("no go.mod above the working directory")
	return ""
}

func milterBuild(t *testing.T, root, pkg, out string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// milterOutput runs a command to completion and returns its stdout (and
// stderr after it, when it fails).
func milterOutput(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func milterRun(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := milterOutput(timeout, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// milterKeyListLine picks the KeyList line out of `postgate dkim genkey`'s
// output: the line after "KeyList line".
func milterKeyListLine(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "KeyList line") && i+1 < len(lines) && strings.Contains(lines[i+1], ":") {
			return strings.TrimSpace(lines[i+1])
		}
	}
	t.Fatalf("no KeyList line in postgate dkim genkey's output:\n%s", out)
	return ""
}

func milterWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// milterMessage is milterload's sign-mode message (cmd/milterload
// makeMessage): size bytes from from, CRLF.
func milterMessage(from string, size int) []byte {
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

func milterEnvDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > 5*time.Minute {
		t.Fatalf("%s=%q: want a duration in (0, 5m]", name, v)
	}
	return d
}

func milterEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 10 {
		t.Fatalf("%s=%q: want 1 to 10", name, v)
	}
	return n
}

// milterDNSForwarder answers DNS on host:53 (UDP and TCP) by passing each
// query to upstream, until the test ends.
func milterDNSForwarder(t *testing.T, host, upstream string) {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			c.Net = "tcp"
		}
		r, _, err := c.Exchange(q, upstream)
		if err != nil {
			r = new(dns.Msg)
			r.SetRcode(q, dns.RcodeServerFailure)
		}
		_ = w.WriteMsg(r)
	})
	addr := net.JoinHostPort(host, "53")
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("DNS for OpenDKIM on %s (its Nameservers option takes no port): %v", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatalf("DNS for OpenDKIM on %s: %v", addr, err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: l, Handler: handler}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.ShutdownContext(ctx)
		})
	}
}

// --- processes -------------------------------------------------------------

// milterProc is a daemon started by the test, stopped at cleanup.
type milterProc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

func milterStart(t *testing.T, name, logPath string, args ...string) *milterProc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &milterProc{name: name, log: logPath, cmd: exec.Command(args[0], args[1:]...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		// SIGTERM, then SIGKILL after 5s: both daemons stop on SIGTERM.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *milterProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *milterProc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// milterWaitSocket waits up to 15s for the daemon to accept on its socket.
func milterWaitSocket(t *testing.T, p *milterProc, path string) {
	t.Helper()
	for range 150 {
		if p.exited() {
			t.Fatalf("%s exited before listening on %s: %v\n%s", p.name, path, p.err, p.logTail())
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: nothing listening on %s after 15s\n%s", p.name, path, p.logTail())
}

// milterStatus reads VmRSS and VmHWM (bytes) of a running process.
func milterStatus(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/status: %s: %v", pid, sc.Text(), err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("/proc/%d/status has no VmRSS/VmHWM", pid)
	}
	return rss, hwm
}

// milterCPU reads the CPU time (user + system, all threads) a running
// process has used, from /proc/PID/stat (fields 14 and 15, in clock ticks:
// USER_HZ is 100 on Linux).
func milterCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func milterMicros(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// --- correctness probes ----------------------------------------------------

// milterHeader is one header field as the MTA hands it to a milter: the
// value without the one leading space Postfix strips, folds as LF.
type milterHeader struct{ name, value string }

// milterSplit splits a CRLF or LF message into header fields and a CRLF
// body, as Postfix (and milterload) hand them to milters.
func milterSplit(t *testing.T, msg []byte) ([]milterHeader, []byte) {
	t.Helper()
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	head, body, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		t.Fatalf("message has no end of header:\n%s", msg)
	}
	var hs []milterHeader
	for _, line := range strings.Split(string(head), "\n") {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && len(hs) > 0 {
			hs[len(hs)-1].value += "\n" + line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		hs = append(hs, milterHeader{name, strings.TrimPrefix(value, " ")})
	}
	return hs, bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
}

// milterProbe sends one message through a milter the way milterload's
// mode does (sign: authenticated submission on ORIGINATING from
// 198.51.100.7; verify: from an outside client) and returns the header
// modifications and the final action.
func milterProbe(t *testing.T, m *milterUnderTest, mode string, msg []byte) ([]gomilter.ModifyAction, *gomilter.Action) {
	t.Helper()
	c := gomilter.NewClientWithOptions("unix", strings.TrimPrefix(m.addr, "unix:"), gomilter.ClientOptions{
		Dialer:       &net.Dialer{Timeout: 10 * time.Second},
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	defer s.Close()
	host, addr, daemon := "mail.outside.example", "192.0.2.10", "smtpd"
	mailMacros := []string{"i", "4PROBE"}
	if mode == "sign" {
		host, addr, daemon = "laptop.example.net", "198.51.100.7", "ORIGINATING"
		mailMacros = append(mailMacros, "{auth_type}", "PLAIN", "{auth_authen}", "alice")
	}
	check := func(what string, act *gomilter.Action, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s %s probe: %s: %v", m.name, mode, what, err)
		}
		if act.Code != gomilter.ActContinue {
			t.Fatalf("%s %s probe: %s: reply %q", m.name, mode, what, act.Code)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s %s probe: %v", m.name, mode, err)
		}
	}
	must(s.Macros(gomilter.CodeConn, "j", milterAuthserv, "{daemon_name}", daemon, "{client_addr}", addr))
	act, err := s.Conn(host, gomilter.FamilyInet, 40000, addr)
	check("connect", act, err)
	act, err = s.Helo("helo.example.net")
	check("helo", act, err)
	must(s.Macros(gomilter.CodeMail, mailMacros...))
	act, err = s.Mail("<"+milterFrom+">", nil)
	check("mail", act, err)
	act, err = s.Rcpt("<bob@example.net>", nil)
	check("rcpt", act, err)
	headers, body := milterSplit(t, msg)
	for _, h := range headers {
		act, err = s.HeaderField(h.name, h.value)
		check("header", act, err)
	}
	act, err = s.HeaderEnd()
	check("end of header", act, err)
	for rest := body; len(rest) > 0; {
		n := min(len(rest), gomilter.MaxBodyChunk)
		act, err = s.BodyChunk(rest[:n])
		check("body", act, err)
		rest = rest[n:]
	}
	must(s.Macros(gomilter.CodeEOB, "i", "4PROBE"))
	mods, act, err := s.End()
	if err != nil {
		t.Fatalf("%s %s probe: end of message: %v", m.name, mode, err)
	}
	return mods, act
}

// milterAdded returns the value of the header field name that mods add or
// insert, and how many mods there are of that name.
func milterAdded(mods []gomilter.ModifyAction, name string) (string, int) {
	var v string
	n := 0
	for _, m := range mods {
		if (m.Code == gomilter.ActAddHeader || m.Code == gomilter.ActInsertHeader) && strings.EqualFold(m.HeaderName, name) {
			v = m.HeaderValue
			n++
		}
	}
	return v, n
}

// probe checks both milters for real and returns, per milter and mode, the
// number of modifications one message gets (what milterload must see for
// every message under load).
func (e *milterEnv) probe(t *testing.T) map[string]map[string]int {
	t.Helper()
	plain := milterMessage(milterFrom, milterMsgSize)
	counts := map[string]map[string]int{}
	signedBy := map[string][]byte{}
	for _, m := range []*milterUnderTest{e.pg, e.od} {
		counts[m.name] = map[string]int{}
		mods, act := milterProbe(t, m, "sign", plain)
		if act.Code != gomilter.ActAccept && act.Code != gomilter.ActContinue {
			t.Fatalf("%s sign probe: final reply %q", m.name, act.Code)
		}
		sig, n := milterAdded(mods, "DKIM-Signature")
		if n != 1 {
			t.Fatalf("%s sign probe: %d DKIM-Signature fields added, want 1 (modifications %+v); log:\n%s", m.name, n, mods, m.proc.logTail())
		}
		if !strings.Contains(sig, "d="+milterDomain) || !strings.Contains(sig, "s="+milterSelector) {
			t.Fatalf("%s sign probe: DKIM-Signature %q is not d=%s s=%s", m.name, sig, milterDomain, milterSelector)
		}
		counts[m.name]["sign"] = len(mods)
		// The value comes as the milter wants it in the header: folds as
		// LF, with or without the space after the colon.
		if !strings.HasPrefix(sig, " ") && !strings.HasPrefix(sig, "\t") {
			sig = " " + sig
		}
		signed := "DKIM-Signature:" + strings.ReplaceAll(sig, "\n", "\r\n") + "\r\n" + string(plain)
		signedBy[m.name] = []byte(signed)
		t.Logf("%s signs: DKIM-Signature:%s", m.name, sig)
	}
	signedFile, err := os.ReadFile(e.signedMsg)
	if err != nil {
		t.Fatal(err)
	}
	signedBy["postgate dkim sign"] = signedFile
	for _, m := range []*milterUnderTest{e.pg, e.od} {
		for _, signer := range []string{"postgate", "OpenDKIM", "postgate dkim sign"} {
			mods, act := milterProbe(t, m, "verify", signedBy[signer])
			if act.Code != gomilter.ActAccept && act.Code != gomilter.ActContinue {
				t.Fatalf("%s verify probe of %s's signature: final reply %q", m.name, signer, act.Code)
			}
			ar, n := milterAdded(mods, "Authentication-Results")
			if n != 1 || !strings.Contains(ar, milterAuthserv) || !strings.Contains(ar, "dkim=pass") {
				t.Fatalf("%s verify probe of %s's signature: Authentication-Results %q (%d added), want one with %s and dkim=pass; modifications %+v; log:\n%s",
					m.name, signer, ar, n, milterAuthserv, mods, m.proc.logTail())
			}
			if signer == "postgate dkim sign" {
				// That is the message of the verify runs.
				counts[m.name]["verify"] = len(mods)
			}
			t.Logf("%s verifies %s's signature: Authentication-Results:%s", m.name, signer, ar)
		}
	}
	return counts
}

// --- load ------------------------------------------------------------------

// milterResult is one milterload run.
type milterResult struct {
	cmd                string
	messages           int
	rate               float64 // messages per second
	p50, p90, p99, max string
	mods               string // header modifications per message
	// cpuPerMsg is the milter's CPU time (user + system, all threads)
	// during the run divided by the messages: less sensitive than the
	// rate to what else runs on the machine.
	cpuPerMsg time.Duration
}

var (
	milterReMessages = regexp.MustCompile(`(?m)^messages (\d+) in ([0-9.]+)s: ([0-9.]+) msgs/s, errors (\d+)$`)
	milterReLatency  = regexp.MustCompile(`(?m)^latency p50 (\S+) p90 (\S+) p99 (\S+) max (\S+)$`)
	milterReMods     = regexp.MustCompile(`(?m)^header modifications per message ([0-9.]+)$`)
)

// load runs milterload against m and fails the test unless every message
// got wantMods modifications and no error.
func (e *milterEnv) load(t *testing.T, m *milterUnderTest, mode string, conns int, d time.Duration, wantMods int) milterResult {
	t.Helper()
	args := []string{e.loadBin, "-addr", m.addr, "-conns", strconv.Itoa(conns),
		"-duration", d.String(), "-messages", strconv.Itoa(milterMaxMsgs), "-mode", mode}
	if mode == "sign" {
		args = append(args, "-size", strconv.Itoa(milterMsgSize))
	} else {
		args = append(args, "-message", e.signedMsg)
	}
	return e.runLoad(t, m, args, d, wantMods)
}

func (e *milterEnv) runLoad(t *testing.T, m *milterUnderTest, args []string, d time.Duration, wantMods int) milterResult {
	t.Helper()
	res := milterResult{cmd: strings.ReplaceAll(strings.Join(args, " "), e.dir, "$DIR")}
	cpu0 := milterCPU(t, m.proc.cmd.Process.Pid)
	out, err := milterOutput(d+2*time.Minute, args...)
	cpu1 := milterCPU(t, m.proc.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("%s: %v\n%s\n%s log:\n%s", res.cmd, err, out, m.name, m.proc.logTail())
	}
	if m.proc.exited() {
		t.Fatalf("%s died during %s: %v\n%s", m.name, res.cmd, m.proc.err, m.proc.logTail())
	}
	mm := milterReMessages.FindStringSubmatch(out)
	lm := milterReLatency.FindStringSubmatch(out)
	dm := milterReMods.FindStringSubmatch(out)
	if mm == nil || lm == nil || dm == nil {
		t.Fatalf("%s: cannot read milterload's output:\n%s", res.cmd, out)
	}
	res.messages, _ = strconv.Atoi(mm[1])
	res.rate, _ = strconv.ParseFloat(mm[3], 64)
	res.p50, res.p90, res.p99, res.max = lm[1], lm[2], lm[3], lm[4]
	res.mods = dm[1]
	if res.messages > 0 {
		res.cpuPerMsg = (cpu1 - cpu0) / time.Duration(res.messages)
	}
	if mm[4] != "0" || strings.Contains(out, "first error:") {
		t.Fatalf("%s: errors under load:\n%s\n%s log:\n%s", res.cmd, out, m.name, m.proc.logTail())
	}
	if res.messages == 0 {
		t.Fatalf("%s: no message went through:\n%s", res.cmd, out)
	}
	// milterload prints the mean with two decimals: equal to the probe's
	// count only if every message got exactly that many.
	if want := fmt.Sprintf("%.2f", float64(wantMods)); res.mods != want {
		t.Fatalf("%s: %s header modifications per message, want %s as in the probe:\n%s", res.cmd, res.mods, want, out)
	}
	t.Logf("%s -> %d msgs, %.0f msgs/s, p50 %s p99 %s, %s CPU per message", res.cmd, res.messages, res.rate, res.p50, res.p99, milterMicros(res.cpuPerMsg))
	return res
}

// --- memory ----------------------------------------------------------------

// milterMem is the memory of one milter around 10 MB messages.
type milterMem struct {
	name                 string
	mode                 string
	cmd                  string
	rssBefore, hwmBefore int64
	rssAfter, hwmAfter   int64
	messages             int
	rate                 float64
	extraPeak            int64 // the growth of the peak over the resident set before
	pgTarget             bool
}

// measureMemory warms m up with 2 KB messages and then sends 10 MB messages
// (one connection, bounded by count and time) to sign or verify, reading
// VmRSS and VmHWM before and after. The peak is reset first (clear_refs), so
// that it is not the one of an earlier run.
//
// The warm-up is long enough for Go's collector to have run tens of cycles:
// a Go daemon's resident set grows after start-up until its heap reaches
// the collector's goal (4 MB at least), whatever the messages. Measured
// from a fresh start (20 messages), that growth, 1-2 MB that any 2 KB
// messages would also cause, was counted against the 10 MB message.
func (e *milterEnv) measureMemory(t *testing.T, m *milterUnderTest, mode string, wantMods int) milterMem {
	t.Helper()
	small, big := []string{"-size", strconv.Itoa(milterMsgSize)}, []string{"-size", strconv.Itoa(milterBigSize)}
	if mode == "verify" {
		small, big = []string{"-message", e.signedMsg}, []string{"-message", e.signedBig}
	}
	e.runLoad(t, m, append([]string{e.loadBin, "-addr", m.addr, "-conns", "1", "-duration", "30s",
		"-messages", strconv.Itoa(milterMemWarmup), "-mode", mode}, small...), 30*time.Second, wantMods)
	pid := m.proc.cmd.Process.Pid
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Logf("resetting the peak resident set of %s: %v", m.name, err)
	}
	mem := milterMem{name: m.name, mode: mode, pgTarget: m == e.pg}
	mem.rssBefore, mem.hwmBefore = milterStatus(t, pid)
	res := e.runLoad(t, m, append([]string{e.loadBin, "-addr", m.addr, "-conns", "1", "-duration", "60s",
		"-messages", "5", "-mode", mode}, big...), time.Minute, wantMods)
	mem.cmd, mem.messages, mem.rate = res.cmd, res.messages, res.rate
	mem.rssAfter, mem.hwmAfter = milterStatus(t, pid)
	mem.extraPeak = mem.hwmAfter - mem.rssBefore
	if mem.hwmAfter == mem.hwmBefore {
		// The peak was not reset and was reached before (start-up, an
		// earlier run): the 10 MB messages added at most what the resident
		// set grew by.
		mem.extraPeak = max(0, mem.rssAfter-mem.rssBefore)
	}
	t.Logf("%s %s 10 MB: VmRSS %d -> %d kB, VmHWM %d -> %d kB", m.name, mode, mem.rssBefore>>10, mem.rssAfter>>10, mem.hwmBefore>>10, mem.hwmAfter>>10)
	return mem
}

// --- profiling -------------------------------------------------------------

type milterProfile struct {
	path string
	done chan error
}

// startProfile fetches a CPU profile of postgate covering most of a run
// of length d into path.
func (e *milterEnv) startProfile(t *testing.T, d time.Duration, path string) *milterProfile {
	t.Helper()
	secs := max(1, int((d - time.Second).Seconds()))
	p := &milterProfile{path: path, done: make(chan error, 1)}
	go func() {
		client := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
		resp, err := client.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.adminAddr, secs))
		if err != nil {
			p.done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			p.done <- fmt.Errorf("status %s", resp.Status)
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		p.done <- err
	}()
	return p
}

// fetch saves what postgate's admin listener serves at path into file.
func (e *milterEnv) fetch(t *testing.T, path, file string) {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + e.adminAddr + path)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return
	}
	t.Logf("%s of postgate written to %s", path, file)
}

func (p *milterProfile) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("CPU profile %s: %v", p.path, err)
			return
		}
		t.Logf("CPU profile of postgate written to %s (go tool pprof -top %s)", p.path, p.path)
	case <-time.After(time.Minute):
		t.Errorf("CPU profile %s: no answer within a minute", p.path)
	}
}

// --- report ----------------------------------------------------------------

type milterRow struct {
	mode   string
	conns  int
	pg, od milterResult
}

type milterReport struct {
	dir                   string
	rows                  []milterRow
	mem                   []milterMem
	loadBefore, loadAfter string
	postgateConf          string
	opendkimConf          string
}

func (r *milterReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## postgate DKIM milter vs OpenDKIM\n\n")
	fmt.Fprintf(&b, "RSA-2048, relaxed/relaxed, %d-byte messages, unix sockets, %s; load average %s before, %s after.\n\n",
		milterMsgSize, milterMachine(), r.loadBefore, r.loadAfter)
	fmt.Fprintf(&b, "| mode | conns | postgate msgs/s | p50 / p99 | CPU/msg | OpenDKIM msgs/s | p50 / p99 | CPU/msg | postgate/OpenDKIM msgs/s |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---|---:|---:|---|---:|---:|\n")
	for _, row := range r.rows {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s / %s | %s | %.0f | %s / %s | %s | %.2fx |\n",
			row.mode, row.conns, row.pg.rate, row.pg.p50, row.pg.p99, milterMicros(row.pg.cpuPerMsg),
			row.od.rate, row.od.p50, row.od.p99, milterMicros(row.od.cpuPerMsg), milterRatio(row.pg.rate, row.od.rate))
	}
	fmt.Fprintf(&b, "\nCPU/msg: the milter's own CPU time (user + system, all threads, from /proc/PID/stat) over the run, per message; milterload runs on the same cores.\n")
	fmt.Fprintf(&b, "\nTargets (issue): ")
	var targets []string
	for _, row := range r.rows {
		if row.conns != 8 {
			continue
		}
		want := 1.5
		if row.mode == "verify" {
			want = 2
		}
		ratio := milterRatio(row.pg.rate, row.od.rate)
		verdict := "met"
		if ratio < want {
			verdict = "NOT met"
		}
		targets = append(targets, fmt.Sprintf("%s at 8 connections >= %.1fx OpenDKIM: %.2fx, %s", row.mode, want, ratio, verdict))
	}
	b.WriteString(strings.Join(targets, "; ") + ".\n")

	fmt.Fprintf(&b, "\n### 10 MB messages, 1 connection\n\n")
	fmt.Fprintf(&b, "| milter | mode | msgs/s | VmRSS before | VmHWM before | VmRSS after | VmHWM after | extra peak |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range r.mem {
		fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %s | %s | %s | %s |\n", m.name, m.mode, m.rate,
			milterMB(m.rssBefore), milterMB(m.hwmBefore), milterMB(m.rssAfter), milterMB(m.hwmAfter), milterMB(m.extraPeak))
	}
	var verdicts []string
	for _, m := range r.mem {
		if m.pgTarget {
			verdict := "met"
			if m.extraPeak >= milterMemTarget {
				verdict = "NOT met"
			}
			verdicts = append(verdicts, fmt.Sprintf("%s %s", m.mode, verdict))
		}
	}
	fmt.Fprintf(&b, "\nTarget: postgate under %s extra for a 10 MB message: %s (extra peak = VmHWM after - VmRSS before; the peak is reset before the 10 MB messages).\n",
		milterMB(milterMemTarget), strings.Join(verdicts, ", "))

	fmt.Fprintf(&b, "\n### Commands\n\n$DIR = the test's temporary directory; `unix:$DIR/pg.sock` is postgate, `unix:$DIR/od.sock` OpenDKIM; each cell is the best of POSTGATE_BENCH_ROUNDS runs.\n\n```\n")
	seen := map[string]bool{}
	for _, row := range r.rows {
		for _, c := range []string{row.pg.cmd, row.od.cmd} {
			if !seen[c] {
				seen[c] = true
				b.WriteString(c + "\n")
			}
		}
	}
	for _, m := range r.mem {
		b.WriteString(m.cmd + "\n")
	}
	b.WriteString("$DIR/postgate serve -config $DIR/postgate.toml\n/usr/sbin/opendkim -f -x $DIR/opendkim.conf\n```\n")
	fmt.Fprintf(&b, "\n$DIR/postgate.toml:\n```toml\n%s```\n", strings.ReplaceAll(r.postgateConf, r.dir, "$DIR"))
	fmt.Fprintf(&b, "\n$DIR/opendkim.conf:\n```\n%s```\n", strings.ReplaceAll(r.opendkimConf, r.dir, "$DIR"))
	return b.String()
}

func milterRatio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func milterMB(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
}

// milterMachine describes the CPU the numbers come from.
func milterMachine() string {
	cpus := 0
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "processor") {
				cpus++
			}
			if name, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(name) == "model name" && model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	parts := []string{fmt.Sprintf("%d CPUs", cpus)}
	if model != "" {
		parts = append(parts, model)
	}
	return strings.Join(parts, ", ")
}
