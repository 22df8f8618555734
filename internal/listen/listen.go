// Package listen opens the daemon's sockets from Postfix-style addresses, with
// the permissions Postfix needs to reach a unix socket from its chroot.
package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Options apply to unix sockets only.
type Options struct {
	Mode  os.FileMode // e.g. 0660
	Group string      // group name or numeric id; "" keeps the process's group
}

// Listen opens addr. A unix socket left behind by a crashed postgate is
// replaced, but one that still answers is not: two daemons on one socket would
// split Postfix's requests between two configurations.
//
// network is "tcp" or "unix" (config.ListenAddr's fields).
func Listen(network, address string, opts Options) (net.Listener, error) {
	addr := network + ":" + address
	if network != "unix" {
		l, err := net.Listen("tcp", address)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return l, nil
	}
	path := address
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	// The socket is created with no access and opened up only once its mode and
	// group are right, so no other user can slip in between.
	old := syscall.Umask(0o777)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if opts.Group != "" {
		gid, err := lookupGroup(opts.Group)
		if err == nil {
			err = os.Chown(path, -1, gid)
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("listen %s: socket group %q: %w", addr, opts.Group, err)
		}
	}
	if err := os.Chmod(path, opts.Mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
}

func lookupGroup(g string) (int, error) {
	if id, err := strconv.Atoi(g); err == nil {
		return id, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(grp.Gid)
}
