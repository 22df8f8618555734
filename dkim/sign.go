package dkim

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// ErrNoKey is returned when no key is configured for the message's author.
var ErrNoKey = errors.New("no signing key for this author")

// DefaultSignedHeaders are signed when present, each instance of them: RFC
// 6376 §5.4.1's list and OpenDKIM's, never trace fields (Received,
// Return-Path) that relays add or rewrite.
var DefaultSignedHeaders = []string{
	"From", "Sender", "Reply-To", "Subject", "Date", "Message-ID",
	"To", "Cc", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Content-ID", "Content-Description",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive",
}

// DefaultOversignedHeaders are listed in h= once more than they occur, so
// nobody can add another instance (a second From:) without breaking the
// signature.
var DefaultOversignedHeaders = []string{"From"}

// SignOptions tunes signing. The zero value (or nil) is the default.
type SignOptions struct {
	// Canonicalization is "header/body" with each "simple" or "relaxed"
	// (a lone "relaxed" means relaxed/simple, as in c=). Default
	// "relaxed/relaxed".
	Canonicalization string
	// SignedHeaders are signed, each instance present; From is always
	// signed. nil means DefaultSignedHeaders.
	SignedHeaders []string
	// OversignedHeaders get one more h= entry than they occur. nil means
	// DefaultOversignedHeaders; an empty non-nil slice oversigns nothing.
	OversignedHeaders []string
}

// ParseCanonicalization splits a c= style "header/body" value; a missing
// body part is "simple" (RFC 6376 §3.5), an empty string is relaxed/relaxed.
func ParseCanonicalization(c string) (header, body string, err error) {
	if c == "" {
		return "relaxed", "relaxed", nil
	}
	h, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(c)), "/")
	if !ok {
		b = "simple"
	}
	for _, v := range []string{h, b} {
		if v != "simple" && v != "relaxed" {
			return "", "", fmt.Errorf("canonicalization %q: want simple or relaxed, as header/body", c)
		}
	}
	return h, b, nil
}

// headerKeys builds h=: every present instance of each signed header, then
// one more of each oversigned header.
func headerKeys(fields []Field, opts *SignOptions) []string {
	signed, over := DefaultSignedHeaders, DefaultOversignedHeaders
	if opts != nil && opts.SignedHeaders != nil {
		signed = opts.SignedHeaders
	}
	if opts != nil && opts.OversignedHeaders != nil {
		over = opts.OversignedHeaders
	}
	count := map[string]int{}
	for _, f := range fields {
		count[strings.ToLower(strings.TrimSpace(f.Name))]++
	}
	var keys []string
	seen := map[string]bool{}
	add := func(name string, n int) {
		for range n {
			keys = append(keys, name)
		}
	}
	hasFrom := false
	for _, name := range signed {
		l := strings.ToLower(name)
		if seen[l] || l == "" {
			continue
		}
		seen[l] = true
		hasFrom = hasFrom || l == "from"
		add(name, count[l])
	}
	if !hasFrom {
		seen["from"] = true
		add("From", count["from"])
	}
	for _, name := range over {
		l := strings.ToLower(name)
		if l == "" {
			continue
		}
		add(name, 1)
	}
	if len(keys) == 0 || !containsFold(keys, "from") {
		keys = append(keys, "From") // go-msgauth insists on From in h=
	}
	return keys
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// Signature is a DKIM-Signature header field to insert at the top.
//
// Value has no leading space and no trailing line break; continuation lines
// are folded with CRLF followed by a space exactly as they were hashed, so
// the field must be written as Name + ": " + Value (what Postfix does for a
// milter header without the leading-space option; with simple header
// canonicalization any other whitespace breaks the signature).
type Signature struct {
	Name, Value string
}

// ValueLF returns Value with LF line breaks, as a milter sends header values.
func (s Signature) ValueLF() string { return strings.ReplaceAll(s.Value, "\r\n", "\n") }

// String returns the whole field, "Name: Value" and CRLF.
func (s Signature) String() string { return s.Name + ": " + s.Value + "\r\n" }

func splitSignature(field string) Signature {
	name, value, _ := strings.Cut(field, ":")
	return Signature{Name: name, Value: strings.TrimSuffix(strings.TrimPrefix(value, " "), "\r\n")}
}

// Signer signs one message with one or more keys while its body streams
// through: memory stays bounded whatever the body size.
type Signer struct {
	signers []*msgdkim.Signer
	w       io.Writer
	err     error
	closed  bool
	aborted *atomic.Bool // read by the keys' Sign in go-msgauth's goroutines
}

// abortableKey is the crypto.Signer handed to go-msgauth. go-msgauth cannot
// be stopped once started: Close is its only exit, and Close signs. An
// aborted message (the client quit or Postfix rejected it) would cost an RSA
// signature for nothing; this key refuses instead.
type abortableKey struct {
	crypto.Signer
	aborted *atomic.Bool
}

func (k abortableKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if k.aborted.Load() {
		return nil, errAborted
	}
	return k.Signer.Sign(rand, digest, opts)
}

// NewSigner starts signing a message whose header is fields (in message
// order) with each of keys. Feed the body with Write, then Close.
func NewSigner(keys []*Key, fields []Field, opts *SignOptions) (*Signer, error) {
	if len(keys) == 0 {
		return nil, ErrNoKey
	}
	var c string
	if opts != nil {
		c = opts.Canonicalization
	}
	hc, bc, err := ParseCanonicalization(c)
	if err != nil {
		return nil, err
	}
	hk := headerKeys(fields, opts)
	s := &Signer{aborted: new(atomic.Bool)}
	writers := make([]io.Writer, 0, len(keys))
	for _, k := range keys {
		ms, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Identifier:             k.Identity,
			Signer:                 abortableKey{k.Signer, s.aborted},
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: msgdkim.Canonicalization(hc),
			BodyCanonicalization:   msgdkim.Canonicalization(bc),
			HeaderKeys:             hk,
		})
		if err != nil {
			s.abort()
			return nil, fmt.Errorf("key %s (d=%s s=%s): %w", k.Path, k.Domain, k.Selector, err)
		}
		s.signers = append(s.signers, ms)
		writers = append(writers, ms)
	}
	if len(writers) == 1 {
		s.w = writers[0]
	} else {
		s.w = io.MultiWriter(writers...)
	}
	if _, err := s.w.Write(headerBlock(fields)); err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

// Write feeds a chunk of the body (LF or CRLF line breaks).
func (s *Signer) Write(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("dkim: write after Close")
	}
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// Close ends the body and returns one signature per key, in key order.
func (s *Signer) Close() ([]Signature, error) {
	if s.closed {
		return nil, errors.New("dkim: Close called twice")
	}
	s.closed = true
	var errs []error
	out := make([]Signature, 0, len(s.signers))
	for _, ms := range s.signers {
		if err := ms.Close(); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, splitSignature(ms.Signature()))
	}
	if err := errors.Join(append([]error{s.err}, errs...)...); err != nil {
		return nil, err
	}
	return out, nil
}

// Abort drops an unfinished message and frees its resources without
// computing any signature.
func (s *Signer) Abort() {
	if !s.closed {
		s.closed = true
		s.abort()
	}
}

func (s *Signer) abort() {
	s.aborted.Store(true)
	for _, ms := range s.signers {
		ms.Close()
	}
}
