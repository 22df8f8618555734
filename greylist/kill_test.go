package greylist

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	kill9DBEnv    = "GREYLIST_KILL9_DB"
	kill9RoundEnv = "GREYLIST_KILL9_ROUND"
)

// TestKill9Writer is the child process of TestKill9: it hammers the store with writes
// and prints "ack KEY" for every write acknowledged, until it is killed.
func TestKill9Writer(t *testing.T) {
	path := os.Getenv(kill9DBEnv)
	if path == "" {
		t.Skip("child process of TestKill9")
	}
	round := os.Getenv(kill9RoundEnv)
	s, err := OpenBolt(path, BoltOptions{Timeout: 10 * time.Second, Logger: quietLogger})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100000 {
				key := fmt.Sprintf("r%s-w%d-%06d", round, w, i)
				err := s.Update(ctx, Triplets, []byte(key), func([]byte) ([]byte, bool) { return []byte("v:" + key), true })
				if err != nil {
					fmt.Println("update:", err)
					os.Exit(2)
				}
				mu.Lock()
				os.Stdout.WriteString("ack " + key + "\n") // one write(2) per line
				mu.Unlock()
			}
		})
	}
	// Churn: short-lived keys written and swept, so commits also free and reuse pages.
	wg.Go(func() {
		for i := range 100000 {
			key := fmt.Sprintf("tmp-%s-%d", round, i)
			s.Update(ctx, Clients, []byte(key), func([]byte) ([]byte, bool) { return make([]byte, 100+i%900), true })
			if i%50 == 49 {
				s.Sweep(ctx, Clients, func(k, v []byte) bool { return strings.HasPrefix(string(k), "tmp-") })
			}
		}
	})
	wg.Wait()
	s.Close()
}

// TestKill9 kills a writing process with SIGKILL at random moments, then checks that the
// database is consistent and holds every write that was acknowledged.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "greylist.db")
	acked := map[string]bool{}
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Writer$")
		cmd.Env = append(os.Environ(), kill9DBEnv+"="+path, fmt.Sprintf("%s=%d", kill9RoundEnv, round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		first := make(chan struct{})
		lines := make(chan []string, 1)
		go func() {
			var got []string
			r := bufio.NewReader(stdout)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					break // a line cut by the kill has no newline: not acknowledged
				}
				if key, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ack "); ok {
					if len(got) == 0 {
						close(first)
					}
					got = append(got, key)
				} else {
					t.Errorf("child: %s", line)
				}
			}
			io.Copy(io.Discard, stdout)
			lines <- got
		}()
		select {
		case <-first:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatal("child acknowledged nothing in 60s")
		}
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond) // a random moment
		cmd.Process.Kill()                                           // SIGKILL
		cmd.Wait()
		got := <-lines
		for _, k := range got {
			acked[k] = true
		}

		s, err := OpenBolt(path, BoltOptions{Logger: quietLogger})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		if err := s.CheckConsistency(); err != nil {
			t.Fatalf("round %d: consistency check: %v", round, err)
		}
		present := 0
		err = s.Scan(context.Background(), Triplets, nil, func(k, v []byte) bool {
			if string(v) != "v:"+string(k) {
				t.Errorf("round %d: %s = %q", round, k, v)
			}
			if acked[string(k)] {
				present++
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if present != len(acked) {
			t.Fatalf("round %d: %d of %d acknowledged writes survived", round, present, len(acked))
		}
		t.Logf("round %d: killed after %d acknowledged writes; all %d acknowledged so far present", round, len(got), len(acked))
		s.Close()
	}
}
