package listen

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestUnixSocketModeAndGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "policy.sock")
	gid := os.Getgid()
	l, err := Listen("unix", path, Options{Mode: 0o660, Group: strconv.Itoa(gid)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("mode = %v, want socket 0660", st.Mode())
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A second daemon must not steal a socket that is in use.
	if _, err := Listen("unix", path, Options{Mode: 0o660}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listener on a live socket: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // leaves the file behind, as a crash would
	l2, err := Listen("unix", path, Options{Mode: 0o600})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestRefusesToReplaceRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.sock")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix", path, Options{Mode: 0o660}); err == nil {
		t.Fatal("a regular file was replaced by a socket")
	}
}

func TestUnknownGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.sock")
	_, err := Listen("unix", path, Options{Mode: 0o660, Group: "no-such-group-postgate"})
	if err == nil || !strings.Contains(err.Error(), "no-such-group-postgate") {
		t.Fatalf("got %v", err)
	}
}

func TestTCP(t *testing.T) {
	l, err := Listen("tcp", "127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
