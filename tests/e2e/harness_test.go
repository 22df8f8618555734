package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"postgate/internal/dnstest"
	"postgate/internal/testhost"
)

const (
	ourDomain   = "example.org"
	ourHostname = "mx.example.org"
	authUser    = "user@example.org"
	authPass    = "e2e-secret-Pw1"
	greyDelay   = 3 * time.Second // [greylist] delay in the e2e config
)

// env is one running test installation: Postfix, Dovecot, postgate, the
// DNS server and the sink, all under one temporary directory.
type env struct {
	// dataStageShipped: configs/main.cf calls postgate at DATA too.
	dataStageShipped bool

	t    *testing.T
	root string // module root (where go.mod is)
	dir  string // temporary directory holding everything

	shipped map[string]any // configs/postgate.toml as shipped
	cfg     map[string]any // the e2e config written for postgate
	notes   []string       // why a section could not be configured

	dns  *dnstest.Server
	sink *sink

	mxPort, mxDataPort, subPort int
	policyPort, adminPort       int
	milterPort                  int // postgate's milter, or a dead port when there is none

	pgBin, pgConfig string
	whitelistFile   string
	keylistFile     string // "" unless [dkim] exists
	dkimSelector    string
	dkimKeyDir      string

	pfConfDir, pfQueue, pfLog string

	mu sync.Mutex
	pg *proc // the running postgate, nil when stopped
}

// proc is a child process whose output is collected.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *logBuf
	done chan struct{}
	err  error // Wait's result, valid after done is closed
}

// logBuf collects a process's output in memory and in a file.
type logBuf struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	file *os.File
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.file != nil {
		l.file.Write(p)
	}
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func startProc(name string, logPath string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, out: &logBuf{file: f}, done: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Own process group, so that stopping it also reaches its children.
	// Pdeathsig: if the test binary dies without running its cleanups
	// (go test's timeout panic), the child does not outlive it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace, then kills the process group.
// It reports whether the process ended on SIGTERM by itself.
func (p *proc) stop(grace time.Duration) bool {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return false
}

// newEnv builds and starts everything, or skips the test when the machine
// cannot run it (not root, packages missing).
func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		skipAll(t, "needs root to run a private Postfix instance (postfix -c DIR start)")
	}
	for _, bin := range []string{"postfix", "postconf", "sendmail", "swaks", "dovecot"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipAll(t, bin+" not installed (Debian packages postfix, swaks, dovecot-core)")
		}
	}
	if _, err := user.Lookup("postfix"); err != nil {
		skipAll(t, "no postfix user (Debian package postfix not installed?)")
	}

	e := &env{t: t}
	e.root = moduleRoot(t)
	dir, err := os.MkdirTemp("", "pg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Postfix's unprivileged daemons must be able to walk to the queue and
	// data directories.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.dir = dir
	t.Cleanup(func() {
		if os.Getenv("POSTGATE_E2E_KEEP") != "" || t.Failed() {
			t.Logf("e2e files kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})

	shipped, err := os.ReadFile(filepath.Join(e.root, "configs", "postgate.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal(shipped, &e.shipped); err != nil {
		t.Fatalf("configs/postgate.toml: %v", err)
	}

	e.sink = startSink(t)
	e.dns = dnstest.NewServer(t, baseZone())
	e.mxPort, e.mxDataPort, e.subPort = testhost.FreePort(t), testhost.FreePort(t), testhost.FreePort(t)
	e.policyPort, e.adminPort, e.milterPort = testhost.FreePort(t), testhost.FreePort(t), testhost.FreePort(t)

	e.buildPostgate()
	e.writePostgateConfig()
	e.setupPostfix()
	e.startDovecot()
	e.startPostfix()
	if err := e.startPostgate(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.mu.Lock()
		p := e.pg
		e.mu.Unlock()
		if p != nil {
			p.stop(5 * time.Second)
		}
	})
	return e
}

// skipAll skips the whole suite, printing every scenario as skipped so
// the summary line is still there for the CI.
func skipAll(t *testing.T, reason string) {
	t.Helper()
	for _, scn := range scenarios {
		fmt.Printf("SKIP %s: %s\n", scn.name, reason)
	}
	fmt.Printf("0 passed, 0 failed, %d skipped\n", len(scenarios))
	t.Skip("e2e: " + reason)
}

// baseZone is the DNS data every scenario may rely on; scenarios add their
// own records with e.dns.Add.
func baseZone() dnstest.Zone {
	return dnstest.Zone{
		"$ORIGIN .",
		"example.org. 60 IN SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 60",
		"example.org. 60 IN MX 10 mx.example.org.",
		"mx.example.org. 60 IN A 127.0.0.1",
		`example.org. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		"e2e.example. 60 IN SOA ns.e2e.example. hostmaster.e2e.example. 1 3600 600 86400 60",
		"remote.example. 60 IN SOA ns.remote.example. hostmaster.remote.example. 1 3600 600 86400 60",
	}
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	t.Fatal("go.mod not found above the test directory")
	return ""
}

func (e *env) path(elem ...string) string {
	return filepath.Join(append([]string{e.dir}, elem...)...)
}

// run runs a command to completion with a timeout and returns its combined output.
func run(timeout time.Duration, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: timed out after %v", strings.Join(args, " "), timeout)
	}
	return string(out), err
}

func (e *env) buildPostgate() {
	e.pgBin = e.path("bin", "postgate")
	gobin := "go"
	if _, err := exec.LookPath(gobin); err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	out, err := run(5*time.Minute, e.root, gobin, "build", "-o", e.pgBin, "./cmd/postgate")
	if err != nil {
		e.t.Fatalf("go build ./cmd/postgate: %v\n%s", err, out)
	}
}

// hasSection reports whether configs/postgate.toml ships a [name] section:
// the feature has landed and its scenarios must run.
func (e *env) hasSection(name string) bool {
	_, ok := e.shipped[name].(map[string]any)
	return ok
}

func (e *env) section(name string) map[string]any {
	s, _ := e.cfg[name].(map[string]any)
	return s
}

// withPort rewrites the port of an address written in the shipped style
// ("inet:127.0.0.1:10040", "127.0.0.1:10041", a list of those).
func withPort(v any, port int) any {
	switch v := v.(type) {
	case string:
		if i := strings.LastIndexByte(v, ':'); i >= 0 && !strings.HasPrefix(v, "unix:") {
			return v[:i+1] + strconv.Itoa(port)
		}
		return "inet:127.0.0.1:" + strconv.Itoa(port)
	case []any:
		if len(v) > 0 {
			return []any{withPort(v[0], port)}
		}
		return []any{"inet:127.0.0.1:" + strconv.Itoa(port)}
	}
	return "inet:127.0.0.1:" + strconv.Itoa(port)
}

// writePostgateConfig derives the e2e config from configs/postgate.toml:
// every shipped key stays, only listeners, paths, DNS servers and the
// greylist delay change.
func (e *env) writePostgateConfig() {
	t := e.t
	// A deep copy through TOML, so the shipped map stays untouched.
	raw, err := toml.Marshal(e.shipped)
	if err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal(raw, &e.cfg); err != nil {
		t.Fatal(err)
	}
	set := func(section, key string, v any) {
		s := e.section(section)
		if s == nil {
			s = map[string]any{}
			e.cfg[section] = s
		}
		s[key] = v
	}
	stateDir := e.path("postgate")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.whitelistFile = filepath.Join(stateDir, "whitelist_clients")
	// 203.0.113.200 is the "known external relay" the DKIM scenarios send
	// from without waiting for greylisting.
	writeFile(t, e.whitelistFile, "# e2e whitelist_clients\n203.0.113.200\n")
	recipients := filepath.Join(stateDir, "whitelist_recipients")
	writeFile(t, recipients, "# e2e whitelist_recipients\n")

	set("policy", "listen", withPort(e.section("policy")["listen"], e.policyPort))
	set("dns", "servers", []any{e.dns.Addr})
	set("dns", "timeout", "1s")
	set("greylist", "delay", greyDelay.String())
	set("greylist", "db", filepath.Join(stateDir, "greylist.db"))
	set("greylist", "whitelist_clients", []any{e.whitelistFile})
	set("greylist", "whitelist_recipients", []any{recipients})
	set("admin", "listen", withPort(e.section("admin")["listen"], e.adminPort))

	if e.hasSection("milter") {
		if l, ok := e.section("milter")["listen"]; ok {
			set("milter", "listen", withPort(l, e.milterPort))
		} else {
			e.notes = append(e.notes, "[milter] has no listen key")
		}
	}
	if e.hasSection("rbl") {
		key := pickKey(e.section("rbl"), "lists", "zones", "dnsbl", "dnsbls", "sites", "dnsbl_sites", "servers")
		if key == "" {
			e.notes = append(e.notes, fmt.Sprintf("[rbl] has no list key the e2e test knows (keys: %s)", keys(e.section("rbl"))))
		} else {
			// Weighted to reach reject_score on its own.
			entry := rblZone
			if rs, ok := e.section("rbl")["reject_score"].(int64); ok && rs > 1 {
				entry = fmt.Sprintf("%s*%d", rblZone, rs)
			}
			set("rbl", key, []any{entry})
		}
		if _, ok := e.section("rbl")["enabled"]; ok {
			set("rbl", "enabled", true)
		}
	}
	if e.hasSection("spf") {
		if _, ok := e.section("spf")["enabled"]; ok {
			set("spf", "enabled", true)
		}
	}
	if e.hasSection("dkim") {
		e.setupDKIMKeys(set)
	}

	out, err := toml.Marshal(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.pgConfig = filepath.Join(stateDir, "postgate.toml")
	writeFile(t, e.pgConfig, "# derived from configs/postgate.toml by tests/e2e\n"+string(out))
	if out, err := run(30*time.Second, e.dir, e.pgBin, "check-config", e.pgConfig); err != nil {
		t.Fatalf("postgate check-config %s: %v\n%s", e.pgConfig, err, out)
	}
}

// setupDKIMKeys makes our signing key with `postgate dkim genkey`, publishes
// it in the test DNS and points [dkim] at a KeyList naming it.
func (e *env) setupDKIMKeys(set func(section, key string, v any)) {
	e.dkimSelector = "e2e2026"
	e.dkimKeyDir = e.path("dkim")
	if err := os.MkdirAll(e.dkimKeyDir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := e.genkey(ourDomain, e.dkimSelector); err != nil {
		e.notes = append(e.notes, err.Error())
		return
	}
	e.keylistFile = e.path("dkim", "keylist")
	writeFile(e.t, e.keylistFile, fmt.Sprintf("*@%s:%s:%s\n", ourDomain, ourDomain, filepath.Join(e.dkimKeyDir, e.dkimSelector)))
	key := pickKey(e.section("dkim"), "keylist", "key_list")
	if key == "" {
		e.notes = append(e.notes, fmt.Sprintf("[dkim] has no keylist key (keys: %s)", keys(e.section("dkim"))))
		return
	}
	set("dkim", key, e.keylistFile)
	if _, ok := e.section("dkim")["authserv_id"]; ok {
		set("dkim", "authserv_id", ourHostname)
	}
}

// genkey runs `postgate dkim genkey` for domain and selector into
// e.dkimKeyDir and publishes the SELECTOR.txt record it writes.
func (e *env) genkey(domain, selector string) error {
	args := [][]string{
		{e.pgBin, "dkim", "genkey", "-d", domain, "-s", selector, "-D", e.dkimKeyDir},
		{e.pgBin, "dkim", "genkey", "-domain", domain, "-selector", selector, "-dir", e.dkimKeyDir},
	}
	var outs []string
	for _, a := range args {
		out, err := run(60*time.Second, e.dir, a...)
		if err == nil {
			break
		}
		outs = append(outs, fmt.Sprintf("%s: %v: %s", strings.Join(a[1:], " "), err, strings.TrimSpace(out)))
	}
	rec, err := os.ReadFile(filepath.Join(e.dkimKeyDir, selector+".txt"))
	if err != nil {
		return fmt.Errorf("postgate dkim genkey wrote no %s.txt (%v); tried: %s", selector, err, strings.Join(outs, "; "))
	}
	if _, err := os.Stat(filepath.Join(e.dkimKeyDir, selector+".private")); err != nil {
		return fmt.Errorf("postgate dkim genkey wrote no %s.private: %v", selector, err)
	}
	// SELECTOR.txt is zone-file text relative to the domain, as
	// opendkim-genkey writes it.
	e.dns.Add("$ORIGIN "+domain+".", string(rec))
	return nil
}

func pickKey(section map[string]any, names ...string) string {
	for _, n := range names {
		if _, ok := section[n]; ok {
			return n
		}
	}
	return ""
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startPostgate starts `postgate serve` and waits until its policy listener
// answers. It returns errors instead of failing so scenarios can use it.
func (e *env) startPostgate() error {
	p, err := startProc("postgate", e.path("postgate", "postgate.log"), e.pgBin, "serve", "-config", e.pgConfig)
	if err != nil {
		return err
	}
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", e.policyPort)}
	if e.hasSection("milter") {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", e.milterPort))
	}
	if err := waitListening(addrs, p, 15*time.Second); err != nil {
		p.stop(2 * time.Second)
		return fmt.Errorf("postgate serve: %v\n%s", err, p.out.String())
	}
	e.mu.Lock()
	e.pg = p
	e.mu.Unlock()
	return nil
}

// stopPostgate sends SIGTERM and reports an error when postgate does not
// stop cleanly (exit status 0) within 10s.
func (e *env) stopPostgate() error {
	e.mu.Lock()
	p := e.pg
	e.pg = nil
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	if !p.stop(10 * time.Second) {
		return fmt.Errorf("postgate did not stop within 10s of SIGTERM (killed)")
	}
	if p.err != nil {
		return fmt.Errorf("postgate exited with %v after SIGTERM", p.err)
	}
	return nil
}

func (e *env) postgate() *proc {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pg
}

// postgateLog is everything the running postgate (and the ones before it)
// logged.
func (e *env) postgateLog() string {
	b, _ := os.ReadFile(e.path("postgate", "postgate.log"))
	return string(b)
}

func waitListening(addrs []string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			if p != nil && p.exited() {
				return fmt.Errorf("exited before listening on %s: %v", a, p.err)
			}
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listening on %s after %v", a, timeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// --- Postfix ---------------------------------------------------------------

// baseServices are the internal services of Debian's master.cf, with chroot
// off (the instance lives in a temporary directory).
const baseServices = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       1       1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// setupPostfix writes main.cf and master.cf: a base for a private loopback
// instance, then the shipped snippets with addresses changed.
func (e *env) setupPostfix() {
	t := e.t
	pf := e.path("postfix")
	e.pfConfDir = filepath.Join(pf, "etc")
	e.pfQueue = filepath.Join(pf, "queue")
	data := filepath.Join(pf, "data")
	e.pfLog = filepath.Join(pf, "postfix.log")
	for _, d := range []string{e.pfConfDir, e.pfQueue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	cert, key := e.writeTestCert()
	writeFile(t, filepath.Join(e.pfConfDir, "virtual_mailboxes"), "/^[^@]+@example\\.org$/ OK\n")

	mainSnippet, err := os.ReadFile(filepath.Join(e.root, "configs", "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	params, err := parseMainCF(string(mainSnippet))
	if err != nil {
		t.Fatalf("configs/%v", err)
	}
	shippedPolicy := strings.TrimPrefix(fmt.Sprint(firstOf(e.shipped, "policy", "listen")), "inet:")
	ourPolicy := fmt.Sprintf("127.0.0.1:%d", e.policyPort)
	ourMilter := fmt.Sprintf("inet:127.0.0.1:%d", e.milterPort)
	inetRe := regexp.MustCompile(`inet:[^\s,}]+`)
	fix := func(p cfParam) cfParam {
		p.Value = strings.ReplaceAll(p.Value, shippedPolicy, ourPolicy)
		if p.Name == "smtpd_milters" {
			p.Value = inetRe.ReplaceAllString(p.Value, ourMilter)
		}
		return p
	}

	var b strings.Builder
	fmt.Fprintf(&b, `# Private Postfix instance for postgate's e2e tests.
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
maillog_file = %[3]s
maillog_file_prefixes = %[4]s
myhostname = %[5]s
mydomain = %[6]s
myorigin = %[6]s
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP postgate-e2e
# The test clients connect from 127.0.0.1 and present external addresses
# (TEST-NETs, outside mynetworks) with XCLIENT.
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
virtual_mailbox_domains = %[6]s
virtual_mailbox_maps = regexp:%[7]s/virtual_mailboxes
# Everything is delivered to the test's sink.
transport_maps = inline:{ *=smtp:[127.0.0.1]:%[8]d }
smtp_tls_security_level = none
smtpd_tls_security_level = may
smtpd_tls_cert_file = %[9]s
smtpd_tls_key_file = %[10]s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
`, e.pfQueue, data, e.pfLog, e.dir, ourHostname, ourDomain, e.pfConfDir, e.sink.port(), cert, key)
	b.WriteString("\n# --- configs/main.cf (policy and milter addresses changed) ---\n")
	for _, p := range params {
		p = fix(p)
		fmt.Fprintf(&b, "%s = %s\n", p.Name, p.Value)
	}
	// The DATA-stage call: shipped active (every service gets it) or
	// commented out (only the second MX service gets it).
	dataStage, shipped := "", false
	for _, p := range params {
		if p.Name == "smtpd_data_restrictions" {
			dataStage, shipped = fix(p).Value, true
		}
	}
	if !shipped {
		v, ok := commentedParam(string(mainSnippet), "smtpd_data_restrictions")
		if !ok {
			t.Fatalf("configs/main.cf: the smtpd_data_restrictions snippet is gone")
		}
		dataStage = fix(cfParam{"smtpd_data_restrictions", v}).Value
	}
	e.dataStageShipped = shipped
	fmt.Fprintf(&b, "e2e_data_restrictions = %s\n", dataStage)
	writeFile(t, filepath.Join(e.pfConfDir, "main.cf"), b.String())

	masterSnippet, err := os.ReadFile(filepath.Join(e.root, "configs", "master.cf"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := parseMasterCF(string(masterSnippet))
	if err != nil {
		t.Fatalf("configs/%v", err)
	}
	var m strings.Builder
	m.WriteString(baseServices)
	fmt.Fprintf(&m, "127.0.0.1:%d inet n - n - - smtpd\n", e.mxPort)
	fmt.Fprintf(&m, "127.0.0.1:%d inet n - n - - smtpd\n  -o syslog_name=postfix/mxdata\n  -o smtpd_data_restrictions=$e2e_data_restrictions\n", e.mxDataPort)
	m.WriteString("# --- configs/master.cf (port and chroot changed) ---\n")
	found := false
	for _, en := range entries {
		if en.Fields[0] == "submission" {
			en.Fields[0] = fmt.Sprintf("127.0.0.1:%d", e.subPort)
			found = true
		}
		en.Fields[4] = "n"
		m.WriteString(en.String())
	}
	if !found {
		t.Fatalf("configs/master.cf: no submission service")
	}
	writeFile(t, filepath.Join(e.pfConfDir, "master.cf"), m.String())
}

func firstOf(m map[string]any, section, key string) any {
	s, _ := m[section].(map[string]any)
	v := s[key]
	if l, ok := v.([]any); ok && len(l) > 0 {
		return l[0]
	}
	return v
}

// postfixCmd runs the postfix command on the private instance. The command
// prints its errors only to a terminal (else to the log), so a failure is
// repeated under script(1) to show them.
func (e *env) postfixCmd(args ...string) (string, error) {
	full := append([]string{"postfix", "-c", e.pfConfDir}, args...)
	out, err := run(60*time.Second, e.dir, full...)
	if err != nil {
		if tty, err2 := run(60*time.Second, e.dir, "script", "-qec", strings.Join(full, " "), "/dev/null"); err2 != nil || tty != "" {
			out += tty
		}
	}
	return out, err
}

func (e *env) startPostfix() {
	t := e.t
	if out, err := e.postfixCmd("check"); err != nil {
		t.Fatalf("postfix check: %v\n%s\n%s", err, out, readTail(e.pfLog, 30))
	}
	// Registered first: a start that fails half-way may leave a master.
	t.Cleanup(e.stopPostfix)
	if out, err := e.postfixCmd("start"); err != nil {
		t.Fatalf("postfix start: %v\n%s\n%s", err, out, readTail(e.pfLog, 30))
	}
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", e.mxPort), fmt.Sprintf("127.0.0.1:%d", e.mxDataPort), fmt.Sprintf("127.0.0.1:%d", e.subPort)}
	if err := waitListening(addrs, nil, 20*time.Second); err != nil {
		t.Fatalf("postfix: %v\n%s", err, readTail(e.pfLog, 30))
	}
}

// stopPostfix stops the instance and makes sure its master is gone.
func (e *env) stopPostfix() {
	pid := 0
	if b, err := os.ReadFile(filepath.Join(e.pfQueue, "pid", "master.pid")); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if out, err := e.postfixCmd("stop"); err != nil {
		e.t.Logf("postfix stop: %v %s", err, out)
	}
	if pid <= 0 {
		return
	}
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Logf("postfix master %d still running 10s after stop: killing it", pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// --- Dovecot ---------------------------------------------------------------

// startDovecot runs a private dovecot with only the auth service, whose
// socket Postfix's submission service uses (smtpd_sasl_path=private/auth,
// relative to the queue directory).
func (e *env) startDovecot() {
	t := e.t
	d := e.path("dovecot")
	if err := os.MkdirAll(filepath.Join(d, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The queue's private/ directory is made by postfix check; make it
	// now so the socket can be created before Postfix starts.
	if out, err := e.postfixCmd("check"); err != nil {
		t.Fatalf("postfix check: %v\n%s\n%s", err, out, readTail(e.pfLog, 30))
	}
	socket := filepath.Join(e.pfQueue, "private", "auth")
	users := filepath.Join(d, "users")
	writeFile(t, users, fmt.Sprintf("%s:{PLAIN}%s\n", authUser, authPass))
	conf := filepath.Join(d, "dovecot.conf")
	writeFile(t, conf, fmt.Sprintf(`# Private dovecot for postgate's e2e tests: SASL for Postfix only.
base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = postgate-e2e-%[2]d
protocols =
log_path = %[1]s/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[3]s
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener %[4]s {
    mode = 0660
    user = postfix
    group = postfix
  }
}
`, d, e.subPort, users, socket))
	p, err := startProc("dovecot", filepath.Join(d, "dovecot.out"), "dovecot", "-F", "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(5 * time.Second) })
	for range 100 {
		if _, err := os.Stat(socket); err == nil {
			return
		}
		if p.exited() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dovecot: no auth socket %s\n%s\n%s", socket, p.out.String(), readTail(filepath.Join(d, "dovecot.log"), 20))
}

// writeTestCert writes a self-signed certificate for the submission
// service's STARTTLS (smtpd_tls_security_level=encrypt).
func (e *env) writeTestCert() (certPath, keyPath string) {
	t := e.t
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: ourHostname},
		DNSNames:     []string{ourHostname},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	d := e.path("tls")
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(d, "cert.pem"), filepath.Join(d, "key.pem")
	writeFile(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func readTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n" + strings.Join(lines, "\n")
}

// sendmail submits a message locally with Postfix's sendmail(1) into the
// private instance (non_smtpd_milters applies).
func (e *env) sendmail(from, to, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sendmail", "-C", e.pfConfDir, "-i", "-f", from, to)
	cmd.Dir = e.dir
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sendmail -C %s: %v: %s", e.pfConfDir, err, out)
	}
	return nil
}

// --- SMTP clients (swaks) ----------------------------------------------------

// sendOpts describes one SMTP transaction made with swaks.
type sendOpts struct {
	port       int
	clientAddr string // presented with XCLIENT ADDR (MX services)
	clientName string // XCLIENT NAME; "[UNAVAILABLE]" when empty
	helo       string
	from, to   string
	token      string // unique marker: an X-E2E-Token header, or inside data
	data       string // whole message (LF or CRLF); "" = swaks' default message
	auth       bool   // STARTTLS + AUTH PLAIN as the test user
}

// sendResult is what the SMTP server answered.
type sendResult struct {
	accepted bool
	code     int    // the first failing reply's code, 250 when accepted
	reply    string // the first failing reply
	stage    string // the command it answered
	out      string // swaks' transcript
}

func (r sendResult) String() string {
	if r.accepted {
		return "accepted"
	}
	return fmt.Sprintf("%s -> %s", r.stage, r.reply)
}

var queuedRe = regexp.MustCompile(`(?m)^<[-~]\s+250 .*queued as`)

func (e *env) send(o sendOpts) (sendResult, error) {
	helo := o.helo
	if helo == "" {
		helo = "client.e2e.example"
	}
	args := []string{"swaks", "--server", fmt.Sprintf("127.0.0.1:%d", o.port),
		"--from", o.from, "--to", o.to, "--ehlo", helo, "--timeout", "40"}
	if o.clientAddr != "" {
		name := o.clientName
		if name == "" {
			name = "[UNAVAILABLE]"
		}
		args = append(args, "--xclient-addr", o.clientAddr, "--xclient-name", name, "--xclient-helo", helo)
	}
	if o.auth {
		args = append(args, "--tls", "--auth", "PLAIN", "--auth-user", authUser, "--auth-password", authPass)
	}
	if o.data != "" {
		f := e.path("msgs", o.token+".eml")
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return sendResult{}, err
		}
		if err := os.WriteFile(f, []byte(o.data), 0o644); err != nil {
			return sendResult{}, err
		}
		args = append(args, "--data", "@"+f)
	} else {
		args = append(args, "--header", "X-E2E-Token: "+o.token, "--header", "Subject: e2e "+o.token)
	}
	out, err := run(60*time.Second, e.dir, args...)
	res := sendResult{out: out}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return res, fmt.Errorf("swaks: %v\n%s", err, out)
	}
	if err == nil && queuedRe.MatchString(out) {
		res.accepted, res.code = true, 250
		return res, nil
	}
	// swaks marks lines " -> " (sent), "<-  " (received), "<** " (error
	// reply); inside TLS "~>", "<~ " and "<~*".
	lastCmd := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, " -> "), strings.HasPrefix(line, " ~> "):
			lastCmd = strings.TrimSpace(line[4:])
		case strings.HasPrefix(line, "<** "), strings.HasPrefix(line, "<~* "):
			text := strings.TrimSpace(line[4:])
			res.reply, res.stage = text, lastCmd
			if len(text) >= 3 {
				res.code, _ = strconv.Atoi(text[:3])
			}
			return res, nil
		}
	}
	return res, fmt.Errorf("swaks: no reply found (%v)\n%s", err, out)
}
