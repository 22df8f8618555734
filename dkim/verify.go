package dkim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"postgate/internal/resolver"
)

// Status is a DKIM result as RFC 8601 §2.7.1 names it.
type Status string

// The DKIM results.
const (
	StatusNone      Status = "none"
	StatusPass      Status = "pass"
	StatusFail      Status = "fail"
	StatusPolicy    Status = "policy"
	StatusNeutral   Status = "neutral"
	StatusTempError Status = "temperror"
	StatusPermError Status = "permerror"
)

// Defaults of VerifyOptions.
const (
	DefaultMaxVerifications = 5
	DefaultLookupTimeout    = 5 * time.Second
)

// VerifyOptions configures verification.
type VerifyOptions struct {
	// Resolver looks up the key records (TXT at selector._domainkey.domain).
	// Required when the message is signed.
	Resolver resolver.Resolver
	// Timeout bounds each key lookup; default DefaultLookupTimeout.
	Timeout time.Duration
	// MaxVerifications is how many signatures are checked, from the top;
	// later ones are ignored. Default DefaultMaxVerifications.
	MaxVerifications int
	// Logger gets one debug line per result; nil means slog.Default().
	Logger *slog.Logger
}

// Result is the outcome of one DKIM-Signature, with the properties an
// Authentication-Results header reports.
type Result struct {
	Status     Status
	Domain     string // d=: header.d
	Identifier string // i=, if present: header.i
	Selector   string // s=: header.s
	Algorithm  string // a=: header.a
	BPrefix    string // first 8 characters of b=: header.b
	Err        error  // why the signature did not pass; nil on pass
}

// Verifier checks the signatures of one message while its body streams
// through. Key lookups start as soon as it is created.
type Verifier struct {
	ctx    context.Context
	cancel context.CancelFunc
	opts   VerifyOptions
	sigs   []sigTags // parsed signatures, at most MaxVerifications
	pw     *io.PipeWriter
	done   chan struct{}
	verifs []*msgdkim.Verification
	err    error
	closed bool
}

// errAborted stops the work of an aborted message: the verification
// goroutine, or a signature (see abortableKey).
var errAborted = errors.New("dkim: message aborted")

// NewVerifier starts verifying a message whose header is fields (in message
// order). Feed the body with Write, then Close. ctx bounds the key lookups.
func NewVerifier(ctx context.Context, fields []Field, opts *VerifyOptions) (*Verifier, error) {
	v := &Verifier{}
	if opts != nil {
		v.opts = *opts
	}
	if v.opts.Timeout <= 0 {
		v.opts.Timeout = DefaultLookupTimeout
	}
	if v.opts.MaxVerifications <= 0 {
		v.opts.MaxVerifications = DefaultMaxVerifications
	}
	if v.opts.Logger == nil {
		v.opts.Logger = slog.Default()
	}
	for _, f := range fields {
		if strings.EqualFold(strings.TrimSpace(f.Name), "DKIM-Signature") {
			if len(v.sigs) == v.opts.MaxVerifications {
				v.opts.Logger.Debug("dkim: signatures over the limit ignored", "max", v.opts.MaxVerifications)
				break
			}
			v.sigs = append(v.sigs, parseSigTags(f.Value))
		}
	}
	if len(v.sigs) == 0 {
		return v, nil // unsigned: nothing to hash
	}
	if v.opts.Resolver == nil {
		return nil, errors.New("dkim: VerifyOptions.Resolver is nil")
	}
	v.ctx, v.cancel = context.WithCancel(ctx)
	pr, pw := io.Pipe()
	v.pw = pw
	v.done = make(chan struct{})
	hdr := headerBlock(fields)
	go func() {
		defer close(v.done)
		v.verifs, v.err = msgdkim.VerifyWithOptions(io.MultiReader(bytes.NewReader(hdr), pr), &msgdkim.VerifyOptions{
			LookupTXT:        v.lookupTXT,
			MaxVerifications: v.opts.MaxVerifications,
		})
		if errors.Is(v.err, msgdkim.ErrTooManySignatures) {
			v.err = nil
		}
		// go-msgauth may stop reading early (one signature, bad tags):
		// drain so Write never blocks.
		io.Copy(io.Discard, pr)
	}()
	return v, nil
}

// lookupTXT is go-msgauth's key lookup hook: it has no context, so the
// deadline is added here, and errors are made into what go-msgauth
// understands. Only NXDOMAIN/NODATA is a permanent "no key"; every other
// failure (SERVFAIL, timeout, cancellation, a wrapped error) comes back as an
// unwrapped *net.DNSError with IsTemporary, which go-msgauth maps to
// temperror instead of permerror.
func (v *Verifier) lookupTXT(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(v.ctx, v.opts.Timeout)
	defer cancel()
	txts, err := v.opts.Resolver.LookupTXT(ctx, name)
	if err == nil {
		return txts, nil
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound && !de.IsTemporary && !de.IsTimeout {
		return nil, &net.DNSError{Err: de.Err, Name: name, Server: de.Server, IsNotFound: true}
	}
	timeout := errors.Is(err, context.DeadlineExceeded) || (de != nil && de.IsTimeout)
	return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true, IsTimeout: timeout}
}

// Write feeds a chunk of the body (LF or CRLF line breaks). It may block
// while a key lookup is outstanding (at most the lookup timeout).
func (v *Verifier) Write(p []byte) (int, error) {
	if v.closed {
		return 0, errors.New("dkim: write after Close")
	}
	if v.pw == nil {
		return len(p), nil
	}
	return v.pw.Write(p)
}

// Close ends the body and returns one result per signature checked, in
// header order; none for an unsigned message (report dkim=none).
func (v *Verifier) Close() ([]Result, error) {
	if v.closed {
		return nil, errors.New("dkim: Close called twice")
	}
	v.closed = true
	if v.pw == nil {
		return nil, nil
	}
	v.pw.Close()
	<-v.done
	v.cancel()
	out := make([]Result, len(v.sigs))
	for i, t := range v.sigs {
		r := Result{Domain: t.d, Identifier: t.i, Selector: t.s, Algorithm: t.a, BPrefix: t.bPrefix()}
		switch {
		case v.err != nil:
			r.Status, r.Err = StatusTempError, v.err
		case i >= len(v.verifs):
			r.Status, r.Err = StatusPermError, errors.New("dkim: signature not verified")
		default:
			r.Status, r.Err = classify(v.verifs[i].Err, t)
		}
		v.opts.Logger.Debug("dkim: verified", "d", r.Domain, "s", r.Selector, "a", r.Algorithm, "result", string(r.Status), "err", r.Err)
		out[i] = r
	}
	return out, nil
}

// Abort drops an unfinished message: outstanding lookups are cancelled.
func (v *Verifier) Abort() {
	if v.closed {
		return
	}
	v.closed = true
	if v.pw == nil {
		return
	}
	v.cancel()
	v.pw.CloseWithError(errAborted)
	<-v.done
}

func classify(err error, t sigTags) (Status, error) {
	switch {
	case err == nil:
		return StatusPass, nil
	case t.hasL:
		// go-msgauth refuses l= outright: a local policy, not a bad signature.
		return StatusPolicy, err
	case msgdkim.IsTempFail(err):
		return StatusTempError, err
	case msgdkim.IsPermFail(err):
		return StatusPermError, err
	}
	return StatusFail, err
}

// sigTags are the DKIM-Signature tags reported in Authentication-Results.
type sigTags struct {
	d, i, s, a, b string
	hasL          bool
}

func (t sigTags) bPrefix() string {
	if len(t.b) > 8 {
		return t.b[:8]
	}
	return t.b
}

// parseSigTags reads the tag=value list of a DKIM-Signature leniently: it
// only feeds the report; go-msgauth judges the syntax.
func parseSigTags(value string) sigTags {
	var t sigTags
	for _, spec := range strings.Split(value, ";") {
		name, val, ok := strings.Cut(spec, "=")
		if !ok {
			continue
		}
		val = stripFWS(val)
		switch stripFWS(name) {
		case "d":
			t.d = strings.ToLower(val)
		case "i":
			t.i = val
		case "s":
			t.s = val
		case "a":
			t.a = strings.ToLower(val)
		case "b":
			t.b = val
		case "l":
			t.hasL = true
		}
	}
	return t
}

func stripFWS(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}

// Summary folds the results of one message into the one Status a policy
// acts on (the on_fail/on_temperror/on_permerror settings): pass if any
// signature passes; else fail if any fails (policy counts as fail); else
// temperror if any lookup failed temporarily; else permerror; none for an
// unsigned message.
func Summary(results []Result) Status {
	seen := map[Status]bool{}
	for _, r := range results {
		seen[r.Status] = true
	}
	for _, s := range []Status{StatusPass, StatusFail, StatusPolicy, StatusTempError, StatusPermError, StatusNeutral} {
		if seen[s] {
			if s == StatusPolicy {
				return StatusFail
			}
			return s
		}
	}
	return StatusNone
}
