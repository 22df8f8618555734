package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"postgate/dkim"
	"postgate/internal/daemon"
)

const dkimUsage = `dkim <command> [arguments]
  genkey -d DOMAIN -s SELECTOR [-b BITS] [-t rsa|ed25519] [-D DIR]
        write SELECTOR.private (0600) and SELECTOR.txt (the DNS record), and
        print the KeyList line and the record to publish
  testkey -d DOMAIN -s SELECTOR -k KEYFILE [-config FILE]
        check the published record against the private key
  sign [-config FILE] [MESSAGE]      sign a message (stdin) with the KeyList
  verify [-config FILE] [MESSAGE]    verify the signatures of a message (stdin)`

func dkimCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{dkimUsage}
	}
	cmd := args[0]
	fs := flag.NewFlagSet("dkim "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	domain := fs.String("d", "", "signing domain")
	selector := fs.String("s", "", "selector")
	bits := fs.Int("b", 2048, "RSA key size in bits")
	typ := fs.String("t", "rsa", "key type: rsa or ed25519")
	dir := fs.String("D", ".", "directory for the key files")
	keyfile := fs.String("k", "", "private key file")
	cfgPath := fs.String("config", "", "configuration file (default "+defaultConfig+" if present, else the embedded defaults)")
	allowReadable := fs.Bool("allow-group-readable", false, "accept a key file readable by group or others")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{fmt.Sprintf("%s: %v\n%s", fs.Name(), err, dkimUsage)}
	}
	switch cmd {
	case "genkey":
		if *domain == "" || *selector == "" {
			return usageError{"dkim genkey: -d DOMAIN and -s SELECTOR are required"}
		}
		if err := os.MkdirAll(*dir, 0o750); err != nil {
			return err
		}
		k, err := dkim.GenerateKey(dkim.GenerateOptions{Domain: *domain, Selector: *selector, Dir: *dir, Type: *typ, Bits: *bits})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (private key, mode 0600) and %s (DNS record)\n\n", k.KeyPath, k.RecordPath)
		fmt.Fprintf(stdout, "KeyList line ([dkim] keylist):\n%s\n\nDNS record to publish:\n%s\n", k.KeyListLine, k.Record)
		return nil
	case "testkey":
		if *domain == "" || *selector == "" || *keyfile == "" {
			return usageError{"dkim testkey: -d DOMAIN, -s SELECTOR and -k KEYFILE are required"}
		}
		cfg, err := operatorConfig(*cfgPath, "")
		if err != nil {
			return err
		}
		res, err := daemon.NewResolver(cfg.DNS, nil, quietLog())
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = dkim.TestKey(ctx, res, *domain, *selector, *keyfile, dkim.LoadOptions{AllowGroupReadable: *allowReadable})
		if err != nil {
			var te *dkim.TestKeyError
			if errors.As(err, &te) {
				return fmt.Errorf("%s._domainkey.%s: %s", *selector, *domain, te.Msg)
			}
			return err
		}
		fmt.Fprintf(stdout, "%s._domainkey.%s: key OK\n", *selector, *domain)
		return nil
	case "sign", "verify":
		cfg, err := operatorConfig(*cfgPath, "")
		if err != nil {
			return err
		}
		in := io.Reader(os.Stdin)
		if fs.NArg() > 0 {
			f, err := os.Open(fs.Arg(0))
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		if cmd == "sign" {
			kr, err := daemon.LoadKeyring(cfg.DKIM)
			if err != nil {
				return err
			}
			if kr == nil {
				return errors.New("dkim sign: no keys configured ([dkim] keylist or signing_table + key_table)")
			}
			_, err = dkim.SignMessage(stdout, in, kr, daemon.SignOptions(cfg.DKIM))
			return err
		}
		res, err := daemon.NewResolver(cfg.DNS, nil, quietLog())
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		results, err := dkim.VerifyMessage(ctx, in, daemon.VerifyOptions(cfg.DKIM, res, quietLog()))
		if err != nil {
			return err
		}
		authserv := cfg.DKIM.AuthservID
		if authserv == "" {
			authserv = cfg.Hostname
		}
		if authserv == "" {
			authserv, _ = os.Hostname()
		}
		fmt.Fprintf(stdout, "Authentication-Results: %s\n", dkim.AuthResults(authserv, results))
		for _, r := range results {
			if r.Err != nil {
				fmt.Fprintf(stdout, "  d=%s s=%s: %s: %v\n", r.Domain, r.Selector, r.Status, r.Err)
			}
		}
		if dkim.Summary(results) != dkim.StatusPass {
			return fmt.Errorf("no valid signature (%s)", dkim.Summary(results))
		}
		return nil
	}
	return usageError{dkimUsage}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
