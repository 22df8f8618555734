package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"
)

// Check is one step of the decision (DNSBL, SPF, greylisting...).
type Check interface {
	// Name is a short fixed word ("rbl", "spf", "greylist"): it prefixes
	// reasons in logs and labels metrics.
	Name() string
	// Check looks at req and records its opinion in d. An error means an
	// internal failure (DNS down, database error): the check is skipped as
	// if it had not run (fail open) and everything it recorded in d is
	// dropped. ctx carries the pipeline's deadline: a check still running
	// then is abandoned (its goroutine lives on until Check returns, so
	// checks must honour ctx).
	Check(ctx context.Context, req *Request, d *Decision) error
}

// Fixed reasons (besides check names) used in logs and metric labels.
const (
	ReasonPass           = "pass"            // checks ran, none objected
	ReasonTrusted        = "trusted"         // client in TrustedNetworks
	ReasonSASL           = "sasl"            // authenticated client
	ReasonState          = "state"           // not at RCPT: no check runs
	ReasonUnknownRequest = "unknown_request" // request is not smtpd_access_policy
	ReasonMalformed      = "malformed"       // request had a line without "="
	ReasonPanic          = "panic"           // the pipeline itself panicked
)

// DefaultCheckTimeout is how long all checks of one request may take
// together by default (the per-service timeout commonly set in Postfix).
const DefaultCheckTimeout = 10 * time.Second

// PipelineOptions configure a Pipeline.
type PipelineOptions struct {
	// TrustedNetworks are clients no check runs for (answer DUNNO).
	TrustedNetworks []netip.Prefix
	// CheckTimeout bounds the time all checks of one request take together;
	// a check still running then is abandoned (counted as an error).
	// Default DefaultCheckTimeout.
	CheckTimeout time.Duration
	Logger       *slog.Logger // nil: slog.Default()
	Metrics      *Metrics     // nil: unregistered metrics
	// Headers holds PREPEND state per message; nil: a private cache with
	// default bounds. Share one across reloads to keep pending headers.
	Headers *HeaderCache
}

// Pipeline runs the checks for a request and composes the one action sent
// back to Postfix. It is safe for concurrent use.
type Pipeline struct {
	checks  []Check
	trusted []netip.Prefix
	timeout time.Duration
	log     *slog.Logger
	metrics *Metrics
	headers *HeaderCache
}

// NewPipeline returns a pipeline running checks in order.
func NewPipeline(opts PipelineOptions, checks ...Check) *Pipeline {
	p := &Pipeline{
		checks:  append([]Check(nil), checks...),
		trusted: append([]netip.Prefix(nil), opts.TrustedNetworks...),
		timeout: opts.CheckTimeout,
		log:     opts.Logger,
		metrics: opts.Metrics,
		headers: opts.Headers,
	}
	if p.timeout <= 0 {
		p.timeout = DefaultCheckTimeout
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.metrics == nil {
		p.metrics = NewMetrics(nil)
	}
	if p.headers == nil {
		p.headers = NewHeaderCache(0, 0, nil)
	}
	return p
}

// CheckRun reports one check's run.
type CheckRun struct {
	Name     string
	Duration time.Duration
	Err      error // non-nil: the check was skipped
}

// Result is the outcome of one request.
type Result struct {
	Action   string // the value of "action=", sanitized
	Reason   string // "check:reason" of the verdict, or a Reason* word
	Header   string // name of the header sent with PREPEND, if any
	Decision *Decision
	Checks   []CheckRun
	Duration time.Duration
}

// Decide runs the checks for req and returns the action to send. It never
// fails: errors and panics of checks are logged, counted and skipped. It
// writes exactly one log line ("decision") and counts the request.
//
// Checks run only at protocol_state RCPT, and not at all for SASL
// authenticated clients or clients in TrustedNetworks. Headers (PREPEND)
// are handed out one per reply, see the package documentation.
func (p *Pipeline) Decide(ctx context.Context, req *Request) Result {
	start := time.Now()
	res := Result{Action: "DUNNO"}
	metricReason := ""
	level := slog.LevelInfo
	var d *Decision
	switch {
	case req.Request != RequestType:
		res.Reason = ReasonUnknownRequest
		level = slog.LevelWarn
	case req.SASLUsername != "":
		res.Reason = ReasonSASL
	case p.isTrusted(req.ClientIP):
		res.Reason = ReasonTrusted
	case req.ProtocolState != "RCPT":
		res.Reason = ReasonState
	default:
		d = &Decision{}
		res.Checks = p.runChecks(ctx, req, d)
		res.Decision = d
		if d.verdict != noVerdict {
			res.Action, res.Reason, metricReason = d.Action(), d.reason, d.verdictBy
		} else {
			res.Reason = ReasonPass
		}
	}
	if metricReason == "" {
		metricReason = res.Reason
	}
	// Headers ride on replies that would otherwise be DUNNO, before the
	// message content only (PREPEND is not allowed at END-OF-MESSAGE).
	pop := res.Action == "DUNNO" && res.Reason != ReasonUnknownRequest &&
		(req.ProtocolState == "RCPT" || req.ProtocolState == "DATA")
	var add []Header
	if d != nil {
		add = p.validHeaders(req, d.headers)
	}
	if len(add) > 0 || pop {
		h, ok, dropped := p.headers.next(req.Instance, add, pop)
		if ok {
			res.Action = sanitizeReply("PREPEND " + h.Name + ": " + h.Value)
			res.Header = h.Name
		}
		if dropped > 0 && req.Instance == "" {
			p.log.Debug("headers dropped: no instance attribute", "count", dropped)
		}
	}
	res.Duration = time.Since(start)
	p.metrics.requests.WithLabelValues(actionVerb(res.Action), metricReason).Inc()
	p.metrics.duration.Observe(res.Duration.Seconds())
	p.logDecision(ctx, level, req, &res)
	return res
}

func (p *Pipeline) isTrusted(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, n := range p.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// validHeaders drops (and logs) headers Postfix would refuse.
func (p *Pipeline) validHeaders(req *Request, hs []Header) []Header {
	out := hs[:0:0]
	for _, h := range hs {
		if !validHeaderName(h.Name) {
			p.log.Error("check asked for an invalid header name; dropped", "header", h.Name, "queue_id", req.QueueID)
			continue
		}
		out = append(out, h)
	}
	return out
}

// runChecks runs the checks in order on d until one rejects or defers.
func (p *Pipeline) runChecks(ctx context.Context, req *Request, d *Decision) []CheckRun {
	if len(p.checks) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	runs := make([]CheckRun, 0, len(p.checks))
	for _, c := range p.checks {
		name := c.Name()
		if name == "" {
			name = "unnamed" // keeps free text out of metric labels
		}
		start := time.Now()
		view, err := runCheck(ctx, c, name, req, d)
		run := CheckRun{Name: name, Duration: time.Since(start), Err: err}
		runs = append(runs, run)
		if err != nil {
			p.metrics.checkErrors.WithLabelValues(name).Inc()
			attrs := []any{"check", name, "error", err.Error(), "queue_id", req.QueueID,
				"client", clientString(req), "instance", req.Instance}
			if pe, ok := err.(*PanicError); ok {
				attrs = append(attrs, "stack", string(pe.Stack))
			}
			p.log.Error("check failed; skipped", attrs...)
			continue
		}
		d.merge(view)
		if d.stops() {
			break
		}
	}
	return runs
}

// PanicError is the error of a check that panicked.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// runCheck runs c on its own view of d in a goroutine, so that a check
// ignoring its context cannot hold the reply past the deadline: it is
// abandoned (its view is never merged) and the request goes on.
func runCheck(ctx context.Context, c Check, name string, req *Request, d *Decision) (*Decision, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not run: %w", err)
	}
	view := d.fork(name)
	done := make(chan error, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- &PanicError{Value: v, Stack: debug.Stack()}
			}
		}()
		done <- c.Check(ctx, req, view)
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
		return view, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("abandoned: %w", ctx.Err())
	}
}

func clientString(req *Request) string {
	name := req.ClientName
	if name == "" {
		name = "unknown"
	}
	return name + "[" + req.ClientAddress + "]"
}

// logDecision writes the one log line of a request, greppable like
// Postfix's own: key=value, sender and recipient in <>.
func (p *Pipeline) logDecision(ctx context.Context, level slog.Level, req *Request, res *Result) {
	if !p.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("queue_id", req.QueueID),
		slog.String("client", clientString(req)),
		slog.String("helo", req.HeloName),
		slog.String("sender", "<"+req.Sender+">"),
		slog.String("recipient", "<"+req.Recipient+">"),
		slog.String("instance", req.Instance),
		slog.String("state", req.ProtocolState),
		slog.String("action", res.Action),
		slog.String("reason", res.Reason),
		slog.Duration("duration", res.Duration),
	)
	if res.Header != "" {
		attrs = append(attrs, slog.String("header", res.Header))
	}
	if req.Request != RequestType {
		attrs = append(attrs, slog.String("request", req.Request))
	}
	if req.SASLUsername != "" {
		attrs = append(attrs, slog.String("sasl_username", req.SASLUsername))
	}
	if d := res.Decision; d != nil {
		if d.Origin != "" {
			attrs = append(attrs, slog.String("origin", d.Origin))
		}
		if d.waived {
			attrs = append(attrs, slog.String("greylist_waived", d.waiveReason))
		}
		if d.required {
			attrs = append(attrs, slog.String("greylist_required", d.requireReason))
		}
	}
	if len(res.Checks) > 0 {
		var b strings.Builder
		for i, c := range res.Checks {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(c.Name)
			b.WriteByte(':')
			b.WriteString(c.Duration.Round(time.Microsecond).String())
			if c.Err != nil {
				b.WriteString("(error)")
			}
		}
		attrs = append(attrs, slog.String("checks", b.String()))
	}
	p.log.LogAttrs(ctx, level, "decision", attrs...)
}
