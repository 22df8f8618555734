// Command postgate is the Postfix policy service and DKIM milter, and the
// tools an operator uses with it. This file only dispatches: each command
// wires a package (internal/daemon, internal/admin, greylist, ...).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"postgate/internal/config"
	"postgate/internal/daemon"
	"postgate/internal/version"
)

const usage = `usage: postgate <command> [arguments]

  serve [-config FILE]         run the daemon (no -config: embedded defaults,
                               loopback listeners, state in ./postgate-state)
  check-config FILE            validate a configuration file and every file it names
  version                      print the version
  greylist stats|list|clients|delete|whitelist ...
                               inspect and edit the greylist state (through the
                               running daemon, or the database file when stopped)
  rbl check IP|DOMAIN          show what each configured DNS list answers
  dkim genkey|testkey|sign|verify ...
                               make and check DKIM keys, sign or verify a message
`

// defaultConfig is used by the operator commands when no -config is given.
const defaultConfig = "/etc/postgate/postgate.toml"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "check-config":
		err = checkConfig(args[1:], stdout)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "postgate %s\n", version.Version)
	case "greylist":
		err = greylistCmd(args[1:], stdout)
	case "rbl":
		err = rblCmd(args[1:], stdout)
	case "dkim":
		err = dkimCmd(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "postgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "postgate %s\n", ue.Error())
			return 2
		}
		fmt.Fprintf(stderr, "postgate: %v\n", err)
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (default: embedded defaults)")
	state := fs.String("state", "postgate-state", "state directory when running with the embedded defaults")
	if err := fs.Parse(args); err != nil {
		return usageError{"serve: " + err.Error()}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	return daemon.Run(daemon.Options{
		ConfigPath: *cfgPath,
		LocalDir:   *state,
		LogOutput:  stderr,
		Signals:    sigs,
	})
}

func checkConfig(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{"check-config: want exactly one FILE"}
	}
	c, err := config.Load(args[0])
	if err == nil {
		err = daemon.CheckFiles(c)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK\n", args[0])
	return nil
}
