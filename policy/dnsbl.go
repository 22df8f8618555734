package policy

import (
	"context"
	"strconv"
	"strings"

	"postgate/rbl"
)

// RBLCheck scores the client against DNS block- and allowlists: it rejects
// at the reject threshold, and otherwise tells greylisting what the score
// means for it.
type RBLCheck struct {
	c *rbl.Checker
	t rbl.Thresholds
}

// NewRBLCheck wraps c with thresholds t.
func NewRBLCheck(c *rbl.Checker, t rbl.Thresholds) *RBLCheck { return &RBLCheck{c: c, t: t} }

func (c *RBLCheck) Name() string { return "rbl" }

func (c *RBLCheck) Check(ctx context.Context, req *Request, d *Decision) error {
	rep := c.c.Score(ctx, rbl.Query{
		ClientIP:     req.ClientIP,
		SenderDomain: domainOf(req.Sender),
		Helo:         req.HeloName,
		ClientName:   req.ClientName,
	})
	d.Annotate("rbl.score", strconv.Itoa(rep.Score))
	switch rep.Decide(c.t) {
	case rbl.Reject:
		hit, _ := rep.TopHit()
		d.Reject(rbl.RejectText(hit, c.c.Reason(ctx, hit)), "listed")
	case rbl.RequireGreylisting:
		d.RequireGreylisting("score")
	case rbl.WaiveGreylisting:
		d.WaiveGreylisting("allowlisted")
	}
	return nil
}

// domainOf returns the domain of an envelope address ("" for the null sender).
func domainOf(addr string) string {
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		return addr[at+1:]
	}
	return ""
}
