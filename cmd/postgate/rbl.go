package main

import (
	"context"
	"flag"
	"io"
	"time"

	"postgate/internal/daemon"
	"postgate/rbl"
)

const rblUsage = `rbl check [-config FILE] IP|DOMAIN
  query every configured list for an address (or a domain, as sender, HELO
  and client name) and show each answer, its meaning, and the resulting score`

func rblCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return usageError{rblUsage}
	}
	fs := flag.NewFlagSet("rbl check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "configuration file (default "+defaultConfig+" if present, else the embedded defaults)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		return usageError{rblUsage}
	}
	q, err := rbl.ParseQuery(fs.Arg(0))
	if err != nil {
		return err
	}
	cfg, err := operatorConfig(*cfgPath, "")
	if err != nil {
		return err
	}
	if len(cfg.RBL.Lists) == 0 {
		return usageError{"rbl check: no lists configured (rbl.lists in " + configName(*cfgPath) + ")"}
	}
	log := quietLog()
	res, err := daemon.NewResolver(cfg.DNS, nil, log)
	if err != nil {
		return err
	}
	c, t, err := daemon.NewRBL(cfg, res, nil, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.RBL.Timeout.D()+5*time.Second)
	defer cancel()
	return rbl.FormatReport(stdout, c.Score(ctx, q), t)
}

func configName(path string) string {
	if path == "" {
		return "the configuration"
	}
	return path
}
