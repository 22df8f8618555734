package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"postgate/internal/redistest"
	"postgate/internal/testhost"
)

// TestPolicyVersusPostgrey measures postgate's policy service beside postgrey
// (Debian package) with the same load generator, in one run: the all-new
// triplet workload (every request a durable write) and the repeat workload
// (a fixed set of triplets, read-only), at 1, 8 and 32 connections. Both
// daemons keep their state on the same disk, postgate with durable commits.
//
//	POSTGATE_BENCH=1 go test -v -count=1 -timeout 30m -run Policy ./tests/bench/
func TestPolicyVersusPostgrey(t *testing.T) {
	if os.Getenv("POSTGATE_BENCH") != "1" {
		t.Skip("a measurement, not a test: set POSTGATE_BENCH=1")
	}
	postgrey, err := exec.LookPath("postgrey")
	if err != nil {
		t.Skip("postgrey (Debian package) is not installed")
	}
	bin := policyBuild(t)
	dur := 10 * time.Second
	if s := os.Getenv("POSTGATE_BENCH_DURATION"); s != "" {
		if dur, err = time.ParseDuration(s); err != nil {
			t.Fatal(err)
		}
	}

	type row struct {
		target, workload string
		conns            int
		res              policyResult
	}
	var rows []row
	seed := time.Now().UnixNano() % 1_000_000
	for _, workload := range []string{"new", "repeat"} {
		for _, conns := range []int{1, 8, 32} {
			for _, target := range []string{"postgate", "postgrey"} {
				addr, stop := policyStart(t, target, bin, postgrey)
				seed++
				res := policyLoad(t, bin, addr, workload, conns, seed, dur)
				stop()
				t.Logf("%-8s %-6s %2d conns: %s", target, workload, conns, res)
				rows = append(rows, row{target, workload, conns, res})
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "| workload | conns | postgate req/s | p50 | p99 | postgrey req/s | p50 | p99 | ratio |\n|---|---|---|---|---|---|---|---|---|\n")
	for i := 0; i+1 < len(rows); i += 2 {
		pg, gr := rows[i].res, rows[i+1].res
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %.0f | %s | %s | %.1fx |\n",
			rows[i].workload, rows[i].conns, pg.rate, pg.p50, pg.p99, gr.rate, gr.p50, gr.p99, pg.rate/gr.rate)
	}
	t.Logf("\n%s", b.String())
	if out := os.Getenv("POSTGATE_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type policyBinaries struct{ postgate, policyload string }

func policyBuild(t *testing.T) policyBinaries {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := policyBinaries{postgate: filepath.Join(dir, "postgate"), policyload: filepath.Join(dir, "policyload")}
	for pkg, out := range map[string]string{"./cmd/postgate": b.postgate, "./cmd/policyload": b.policyload} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	return b
}

// policyStart starts a fresh daemon (empty database) and returns its address.
func policyStart(t *testing.T, target string, bin policyBinaries, postgrey string, redisAddr ...string) (string, func()) {
	t.Helper()
	// The state goes to disk (not tmpfs), where a mail server keeps it.
	dir, err := os.MkdirTemp("/var/tmp", "postgate-bench-")
	if err != nil {
		t.Fatal(err)
	}
	port := testhost.FreePort(t)
	var cmd *exec.Cmd
	switch target {
	case "postgate", "postgate-redis":
		store := ""
		if target == "postgate-redis" {
			store = fmt.Sprintf("store = \"redis\"\n[greylist.redis]\naddrs = [%q]\nkey_prefix = \"bench%d:\"\n", redisAddr[0], port)
		}
		cfg := filepath.Join(dir, "postgate.toml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`[log]
level = "info"
[policy]
listen = ["inet:127.0.0.1:%d"]
[spf]
enabled = false
[milter]
listen = []
[greylist]
db = "greylist.db"
%s
[admin]
listen = ""
`, port, store)), 0o644)
		cmd = exec.Command(bin.postgate, "serve", "-config", cfg)
		// One log line per decision, written like in production (to a file).
		logf, err := os.Create(filepath.Join(dir, "postgate.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = logf
	case "postgrey":
		os.Chmod(dir, 0o777)
		cmd = exec.Command(postgrey, fmt.Sprintf("--inet=127.0.0.1:%d", port), "--dbdir="+dir, "--delay=300",
			"--user=postgrey", "--group=postgrey", "--pidfile="+filepath.Join(dir, "postgrey.pid"))
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("%s did not start listening on %s", target, addr)
		}
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	t.Cleanup(stop)
	return "inet:" + addr, stop
}

type policyResult struct {
	rate     float64
	p50, p99 string
	errors   string
}

func (r policyResult) String() string {
	return fmt.Sprintf("%.0f req/s, p50 %s, p99 %s", r.rate, r.p50, r.p99)
}

var (
	policyRateRe    = regexp.MustCompile(`answered in [0-9.]+s: (\d+) req/s`)
	policyLatencyRe = regexp.MustCompile(`p50 (\S+)\s+p90 \S+\s+p99 (\S+)`)
	policyErrorsRe  = regexp.MustCompile(`errors:\s+connect (\d+), io (\d+), bad reply (\d+)`)
)

func policyLoad(t *testing.T, bin policyBinaries, addr, workload string, conns int, seed int64, dur time.Duration) policyResult {
	t.Helper()
	out, err := exec.Command(bin.policyload, "-addr", addr, "-workload", workload, "-conns", strconv.Itoa(conns),
		"-requests", "2000000", "-duration", dur.String(), "-seed", strconv.FormatInt(seed, 10)).CombinedOutput()
	if err != nil {
		t.Fatalf("policyload: %v\n%s", err, out)
	}
	s := string(out)
	m, l, e := policyRateRe.FindStringSubmatch(s), policyLatencyRe.FindStringSubmatch(s), policyErrorsRe.FindStringSubmatch(s)
	if m == nil || l == nil || e == nil {
		t.Fatalf("cannot read policyload output:\n%s", s)
	}
	if e[1] != "0" || e[2] != "0" || e[3] != "0" {
		t.Fatalf("policyload reported errors:\n%s", s)
	}
	rate, _ := strconv.ParseFloat(m[1], 64)
	return policyResult{rate: rate, p50: l[1], p99: l[2]}
}

// TestPolicyRedisVersusBbolt measures the same load against postgate with
// the greylist in Redis (redis-server on loopback, no persistence) and in
// bbolt (durable commits).
//
//	POSTGATE_BENCH=1 go test -v -count=1 -timeout 30m -run Redis ./tests/bench/
func TestPolicyRedisVersusBbolt(t *testing.T) {
	if os.Getenv("POSTGATE_BENCH") != "1" {
		t.Skip("a measurement, not a test: set POSTGATE_BENCH=1")
	}
	r := redistest.Start(t)
	bin := policyBuild(t)
	seed := time.Now().UnixNano()%1_000_000 + 500_000
	var b strings.Builder
	fmt.Fprintf(&b, "| workload | conns | bbolt req/s | p50 | p99 | redis req/s | p50 | p99 |\n|---|---|---|---|---|---|---|---|\n")
	for _, workload := range []string{"new", "repeat"} {
		for _, conns := range []int{8, 32} {
			var res [2]policyResult
			for i, target := range []string{"postgate", "postgate-redis"} {
				addr, stop := policyStart(t, target, bin, "", r.Addr())
				seed++
				res[i] = policyLoad(t, bin, addr, workload, conns, seed, 10*time.Second)
				stop()
				t.Logf("%-14s %-6s %2d conns: %s", target, workload, conns, res[i])
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %.0f | %s | %s |\n", workload, conns,
				res[0].rate, res[0].p50, res[0].p99, res[1].rate, res[1].p50, res[1].p99)
		}
	}
	t.Logf("\n%s", b.String())
	if out := os.Getenv("POSTGATE_BENCH_OUT"); out != "" {
		os.WriteFile(out, []byte(b.String()), 0o644)
	}
}
