package policy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"postgate/greylist"
	"postgate/internal/version"
)

// GreylistOptions configure the greylisting step of the pipeline.
type GreylistOptions struct {
	// DeferText is the text of the DEFER_IF_PERMIT reply: %s = seconds left,
	// %r = recipient domain, %% = a percent sign.
	DeferText string
	// Header adds X-Greylist on the first message of a triplet that passes.
	Header bool
	// Hostname names this host in the X-Greylist header.
	Hostname string
	// OnlyWhenRequired greylists only clients an earlier check asked for
	// (RequireGreylisting: a DNSBL score at or above greylist_score), gross's
	// mode; otherwise every new triplet is greylisted, as postgrey does.
	OnlyWhenRequired bool
	// Now is the clock of the X-Greylist date (nil: time.Now).
	Now func() time.Time
}

// GreylistCheck is greylisting as a pipeline step. It runs last: earlier
// checks may waive it (an SPF pass from an allowlisted domain, a DNSWL
// listing), require it, or give it a pool-aware Origin.
type GreylistCheck struct {
	g    *greylist.Greylister
	opts GreylistOptions
}

// NewGreylistCheck wraps g.
func NewGreylistCheck(g *greylist.Greylister, opts GreylistOptions) *GreylistCheck {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &GreylistCheck{g: g, opts: opts}
}

func (c *GreylistCheck) Name() string { return "greylist" }

func (c *GreylistCheck) Check(ctx context.Context, req *Request, d *Decision) error {
	if d.GreylistingWaived() && !d.GreylistingRequired() {
		d.Annotate("greylist", "waived")
		return nil
	}
	if c.opts.OnlyWhenRequired && !d.GreylistingRequired() {
		d.Annotate("greylist", "not-required")
		return nil
	}
	v, err := c.g.Check(ctx, greylist.Input{
		ClientIP:   req.ClientIP,
		ClientName: req.ClientName,
		Sender:     req.Sender,
		Recipient:  req.Recipient,
		Origin:     d.Origin,
	})
	if err != nil {
		return err
	}
	d.Annotate("greylist", v.Reason)
	if v.Action == greylist.Defer {
		d.DeferIfPermit(FormatDeferText(c.opts.DeferText, v.Wait, req.Recipient), v.Reason)
		return nil
	}
	if v.Delayed > 0 && c.opts.Header {
		d.AddHeader("X-Greylist", fmt.Sprintf("delayed %d seconds by postgate-%s at %s; %s",
			int64(v.Delayed/time.Second), version.Version, c.opts.Hostname,
			c.opts.Now().Format(time.RFC1123Z)))
	}
	return nil
}

// FormatDeferText expands postgrey's placeholders in a greylisting reply.
func FormatDeferText(text string, wait time.Duration, recipient string) string {
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		if text[i] != '%' || i+1 == len(text) {
			b.WriteByte(text[i])
			continue
		}
		i++
		switch text[i] {
		case 's':
			// Round up: "0 seconds" would invite an immediate, useless retry.
			b.WriteString(strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
		case 'r':
			if at := strings.LastIndexByte(recipient, '@'); at >= 0 {
				b.WriteString(recipient[at+1:])
			}
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(text[i])
		}
	}
	return b.String()
}
