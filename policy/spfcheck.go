package policy

import (
	"context"
	"strings"

	"postgate/policy/spf"
)

// SPFCheck checks the HELO and MAIL FROM identities (RFC 7208) and acts on
// the results as its Policy says: reject or defer, a Received-SPF (or
// Authentication-Results) header, and what greylisting should make of it.
type SPFCheck struct {
	c *spf.Checker
	p *spf.Policy
}

// NewSPFCheck wraps c with policy p.
func NewSPFCheck(c *spf.Checker, p *spf.Policy) *SPFCheck { return &SPFCheck{c: c, p: p} }

func (c *SPFCheck) Name() string { return "spf" }

func (c *SPFCheck) Check(ctx context.Context, req *Request, d *Decision) error {
	if skip, why := c.p.Skip(req.ClientIP, req.HeloName); skip {
		d.Annotate("spf", "skipped: "+why)
		return nil
	}
	var helo spf.Result
	if c.p.NeedHelo() {
		helo = c.c.CheckHelo(ctx, req.ClientIP, req.HeloName)
		d.Annotate("spf.helo", helo.Result)
	}
	mailfrom := c.c.CheckMailFrom(ctx, req.ClientIP, req.HeloName, req.Sender)
	d.Annotate("spf.mailfrom", mailfrom.Result)

	o := c.p.Decide(helo, mailfrom)
	switch o.Action {
	case spf.Reject:
		d.Reject(o.Reply, shortReason(o, helo, mailfrom))
		return nil
	case spf.Defer:
		d.Defer(o.Reply, shortReason(o, helo, mailfrom))
		return nil
	}
	if name, value, ok := strings.Cut(o.Header, ":"); ok {
		d.AddHeader(name, strings.TrimPrefix(value, " "))
	}
	if o.GreylistWaive {
		d.WaiveGreylisting("mailfrom-" + mailfrom.Result)
	}
	if o.GreylistRequire {
		d.RequireGreylisting("mailfrom-" + mailfrom.Result)
	}
	if o.Origin != "" {
		d.Origin = o.Origin
	}
	return nil
}

// shortReason names the identity and result that decided, for the log's
// reason= field ("spf:helo-fail", "spf:mailfrom-permerror").
func shortReason(o spf.Outcome, helo, mailfrom spf.Result) string {
	if helo.Result != "" && strings.HasPrefix(o.Reason, "HELO") {
		return "helo-" + helo.Result
	}
	return "mailfrom-" + mailfrom.Result
}
