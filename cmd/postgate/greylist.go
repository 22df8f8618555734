package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"text/tabwriter"
	"time"

	"postgate/greylist"
	"postgate/internal/admin"
	"postgate/internal/config"
	"postgate/internal/daemon"
)

const greylistUsage = `greylist <command> [-config FILE] [arguments]
  stats                         counts of triplets and auto-whitelisted clients
  list [-prefix P] [-contains S] [-limit N]
                                triplets (client-network/sender/recipient)
  clients [-prefix P] [-contains S] [-limit N]
                                auto-whitelist entries
  delete [-client IP|ORIGIN] [-sender S] [-recipient R]
                                forget matching triplets (at least one filter)
  delete-client IP              forget a client's auto-whitelist entry
  whitelist IP                  auto-whitelist a client now
  migrate -from STORE -to STORE copy all greylist state (STORE: bbolt:PATH or
                                redis://[user:pass@]host:port/db); run it again
                                at any time, it merges`

// greylistCmd runs an operator command against the running daemon's admin
// API, or against the database file when no daemon answers.
func greylistCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{greylistUsage}
	}
	cmd := args[0]
	fs := flag.NewFlagSet("greylist "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "configuration file (default "+defaultConfig+" if present, else the embedded defaults)")
	state := fs.String("state", "postgate-state", "state directory of the embedded defaults")
	prefix := fs.String("prefix", "", "only keys starting with this")
	contains := fs.String("contains", "", "only keys containing this")
	limit := fs.Int("limit", 0, "at most this many entries")
	client := fs.String("client", "", "client address (any address of its network) or origin")
	sender := fs.String("sender", "", "envelope sender (\"<>\" for the null sender)")
	recipient := fs.String("recipient", "", "recipient")
	from := fs.String("from", "", "migrate: source store")
	to := fs.String("to", "", "migrate: destination store")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{fmt.Sprintf("%s: %v\n%s", fs.Name(), err, greylistUsage)}
	}

	cfg, err := operatorConfig(*cfgPath, *state)
	if err != nil {
		return err
	}
	if cmd == "migrate" {
		return migrate(cfg, *from, *to, stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ga, closeFn, err := greylistAdmin(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeFn()

	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer w.Flush()
	lo := greylist.ListOptions{Prefix: *prefix, Contains: *contains, Limit: *limit}
	switch cmd {
	case "stats":
		s, err := ga.Stats(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "triplets\t%d\npassed\t%d\npending\t%d\nclients\t%d\nauto-whitelisted\t%d\ncorrupt\t%d\n",
			s.Triplets, s.Passed, s.Pending, s.Clients, s.AWLClients, s.Corrupt)
	case "list":
		es, err := ga.ListTriplets(ctx, lo)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "TRIPLET\tFIRST SEEN\tLAST SEEN\tSTATE")
		for _, e := range es {
			state := "pending"
			if e.Passed {
				state = "passed"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.Key, stamp(e.First), stamp(e.Last), state)
		}
	case "clients":
		es, err := ga.ListClients(ctx, lo)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "CLIENT\tPASSES\tLAST\tWHITELISTED")
		for _, e := range es {
			fmt.Fprintf(w, "%s\t%d\t%s\t%v\n", e.Client, e.Count, stamp(e.Last), e.Whitelisted)
		}
	case "delete":
		f := greylist.TripletFilter{Network: *client, Recipient: *recipient}
		if *sender != "" {
			f.SenderSet = true
			if *sender != "<>" {
				f.Sender = *sender
			}
		}
		if f.Network == "" && !f.SenderSet && f.Recipient == "" {
			return usageError{"greylist delete: give at least one of -client, -sender, -recipient"}
		}
		n, err := ga.DeleteTriplets(ctx, f)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "deleted %d triplets\n", n)
	case "delete-client", "whitelist":
		if fs.NArg() != 1 {
			return usageError{fmt.Sprintf("greylist %s: want one client IP address", cmd)}
		}
		ip, err := netip.ParseAddr(fs.Arg(0))
		if err != nil {
			return fmt.Errorf("bad client address %q", fs.Arg(0))
		}
		if cmd == "whitelist" {
			if err := ga.WhitelistClient(ctx, ip); err != nil {
				return err
			}
			fmt.Fprintf(w, "%s auto-whitelisted\n", ip)
			return nil
		}
		ok, err := ga.DeleteClient(ctx, ip)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "deleted: %v\n", ok)
	default:
		return usageError{greylistUsage}
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// operatorConfig is the configuration an operator command works from.
func operatorConfig(path, state string) (*config.Config, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfig); err == nil {
			path = defaultConfig
		}
	}
	if path == "" {
		return config.Local(state), nil
	}
	return config.Load(path)
}

// greylistAdmin reaches the running daemon, or opens the database when no
// daemon answers (bbolt allows one process at a time).
func greylistAdmin(ctx context.Context, cfg *config.Config) (admin.GreylistAdmin, func(), error) {
	if cfg.Admin.Listen != "" {
		c := admin.NewClient(cfg.Admin.Listen)
		err := c.Ping(ctx)
		if err == nil {
			return c, func() {}, nil
		}
		if !errors.Is(err, admin.ErrUnreachable) {
			return nil, nil, err
		}
	}
	if cfg.Greylist.Store != "redis" {
		if _, err := os.Stat(cfg.Greylist.DB); err != nil {
			return nil, nil, fmt.Errorf("no daemon answers on %s and the database cannot be opened: %w", cfg.Admin.Listen, err)
		}
	}
	store, err := daemon.OpenGreylistStore(ctx, cfg.Greylist, time.Second, nil, quietLog())
	if err != nil {
		return nil, nil, err
	}
	g := greylist.New(store, daemon.GreylistConfig(cfg.Greylist), nil, nil)
	return g, func() { store.Close() }, nil
}

// migrate copies the greylist state between stores, e.g. from a single MX's
// bbolt file into the Redis several MX hosts will share.
func migrate(cfg *config.Config, from, to string, stdout io.Writer) error {
	if from == "" || to == "" {
		return usageError{"greylist migrate: -from STORE and -to STORE are required (bbolt:PATH or redis://host:port/db)"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	src, err := daemon.OpenStoreSpec(ctx, from, cfg.Greylist, quietLog())
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := daemon.OpenStoreSpec(ctx, to, cfg.Greylist, quietLog())
	if err != nil {
		return err
	}
	defer dst.Close()
	n, err := greylist.Migrate(ctx, src, dst, func(b greylist.Bucket, n int) {
		fmt.Fprintf(stdout, "%s: %d\n", b, n)
	})
	if err != nil {
		return fmt.Errorf("after %d entries: %w", n, err)
	}
	fmt.Fprintf(stdout, "migrated %d entries\n", n)
	return nil
}
