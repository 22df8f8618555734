package policy

import "maps"

// verdict is a check's objection, ordered by strength.
type verdict int

const (
	noVerdict verdict = iota
	deferIfPermit
	deferVerdict
	rejectVerdict
)

// Header is a header to PREPEND to the message.
type Header struct {
	Name, Value string
}

// Decision accumulates what the checks of one request say. Each check gets
// its own view (changes are merged into the request's decision only when the
// check returns without error), so a check that fails, panics or times out
// leaves no trace. The zero value is ready to use, which lets a check's tests
// build one directly.
//
// Precedence is fixed in one place (Pipeline): reject > defer >
// defer_if_permit > PREPEND > DUNNO. Reject and Defer stop the pipeline;
// DeferIfPermit does not (a later check may still reject).
type Decision struct {
	// Origin, when not empty, replaces the client network in the greylisting
	// key ("pool-aware greylisting"). The SPF check sets it to the validated
	// sender domain.
	Origin string

	check     string // name of the check this view belongs to ("" outside a pipeline)
	verdict   verdict
	reply     string
	reason    string
	verdictBy string // check that set the verdict (a metric label)

	headers []Header

	waived, required           bool
	waiveReason, requireReason string

	notes map[string]string
}

// prefix turns a check's own reason into "check:reason".
func (d *Decision) prefix(reason string) string {
	switch {
	case d.check == "":
		return reason
	case reason == "":
		return d.check
	}
	return d.check + ":" + reason
}

func (d *Decision) setVerdict(v verdict, reply, reason string) {
	if v > d.verdict {
		d.verdict, d.reply, d.reason, d.verdictBy = v, reply, d.prefix(reason), d.check
	}
}

// Reject refuses the recipient with reply, a full SMTP reply such as
// "550 5.7.23 SPF validation failed" (text without a 5xx code is sent as
// "REJECT text", which Postfix answers with 554 5.7.1). reason is a short
// machine-greppable word for the log ("fail"); the check name is prefixed.
func (d *Decision) Reject(reply, reason string) {
	d.setVerdict(rejectVerdict, reply, reason)
}

// Defer refuses the recipient temporarily with reply, such as
// "451 4.7.24 SPF temporary error" (text without a 4xx code is sent as
// "DEFER text", which Postfix answers with 450 4.7.1).
func (d *Decision) Defer(reply, reason string) {
	d.setVerdict(deferVerdict, reply, reason)
}

// DeferIfPermit answers "DEFER_IF_PERMIT 4.2.0 text" (the enhanced status
// code is added when text does not start with one): Postfix defers the
// recipient unless a later restriction rejects it. This is greylisting's
// answer.
func (d *Decision) DeferIfPermit(text, reason string) {
	d.setVerdict(deferIfPermit, text, reason)
}

// AddHeader asks for "name: value" to be prepended to the message. Postfix
// takes one header per reply: see the package documentation for how headers
// are spread over the replies of one message. Only one header of each name
// is added per message (the first one asked for).
func (d *Decision) AddHeader(name, value string) {
	d.headers = append(d.headers, Header{Name: name, Value: value})
}

// WaiveGreylisting tells the greylisting check that this client needs no
// greylisting (e.g. an SPF pass from a known sender, a DNSWL listing).
func (d *Decision) WaiveGreylisting(reason string) {
	if !d.waived {
		d.waived, d.waiveReason = true, d.prefix(reason)
	}
}

// RequireGreylisting tells the greylisting check to greylist this client
// even if it would not otherwise (e.g. a moderate DNSBL score). When both
// are set the greylisting check should let the requirement win.
func (d *Decision) RequireGreylisting(reason string) {
	if !d.required {
		d.required, d.requireReason = true, d.prefix(reason)
	}
}

// GreylistingWaived reports whether an earlier check waived greylisting.
func (d *Decision) GreylistingWaived() bool { return d.waived }

// GreylistingRequired reports whether an earlier check required greylisting.
func (d *Decision) GreylistingRequired() bool { return d.required }

// WaiveReason and RequireReason return the "check:reason" of the first
// waiver or requirement, or "".
func (d *Decision) WaiveReason() string   { return d.waiveReason }
func (d *Decision) RequireReason() string { return d.requireReason }

// Annotate leaves a note for later checks, such as "spf.mailfrom"="pass" or
// "rbl.score"="3.5". Keys are namespaced by the check that writes them.
func (d *Decision) Annotate(key, value string) {
	if d.notes == nil {
		d.notes = make(map[string]string, 4)
	}
	d.notes[key] = value
}

// Annotation returns a note left by an earlier check.
func (d *Decision) Annotation(key string) (string, bool) {
	v, ok := d.notes[key]
	return v, ok
}

// Annotations returns a copy of all notes.
func (d *Decision) Annotations() map[string]string { return maps.Clone(d.notes) }

// Headers returns the headers asked for so far.
func (d *Decision) Headers() []Header { return append([]Header(nil), d.headers...) }

// Action returns the action the current verdict would produce, without
// headers ("DUNNO" when no check objected).
func (d *Decision) Action() string {
	switch d.verdict {
	case rejectVerdict:
		if hasSMTPCode(d.reply, '5') {
			return sanitizeReply(d.reply)
		}
		return sanitizeReply("REJECT " + d.reply)
	case deferVerdict:
		if hasSMTPCode(d.reply, '4') {
			return sanitizeReply(d.reply)
		}
		return sanitizeReply("DEFER " + d.reply)
	case deferIfPermit:
		if hasEnhancedCode(d.reply, '4') {
			return sanitizeReply("DEFER_IF_PERMIT " + d.reply)
		}
		return sanitizeReply("DEFER_IF_PERMIT 4.2.0 " + d.reply)
	}
	return "DUNNO"
}

// Reason returns the "check:reason" of the current verdict, or "".
func (d *Decision) Reason() string { return d.reason }

// stops reports whether the pipeline must stop: a reject or defer is final.
func (d *Decision) stops() bool { return d.verdict >= deferVerdict }

// fork returns the view a check named name works on.
func (d *Decision) fork(name string) *Decision {
	c := *d
	c.check = name
	c.headers = nil
	c.notes = maps.Clone(d.notes)
	return &c
}

// merge takes in what a check did on its view c.
func (d *Decision) merge(c *Decision) {
	d.Origin = c.Origin
	if c.verdict > d.verdict {
		d.verdict, d.reply, d.reason, d.verdictBy = c.verdict, c.reply, c.reason, c.verdictBy
	}
	d.headers = append(d.headers, c.headers...)
	if c.waived && !d.waived {
		d.waived, d.waiveReason = true, c.waiveReason
	}
	if c.required && !d.required {
		d.required, d.requireReason = true, c.requireReason
	}
	d.notes = c.notes
}
