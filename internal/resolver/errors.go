package resolver

import (
	"context"
	"errors"
	"net"
)

// IsNXDomain reports whether err says the name does not exist.
func IsNXDomain(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == ErrNoSuchHost
}

// IsNoData reports whether err says the name exists but has no record of
// the type asked.
func IsNoData(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == ErrNoSuchRecord
}

// IsTemporary reports whether err is a failure that may go away on retry:
// server failure, refusal, timeout, network error.
func IsTemporary(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsTemporary
}

// outcome is what a lookup learned, independent of which caller asked: the
// name in a *net.DNSError is the caller's own spelling, filled in by err.
type outcome struct {
	kind    outcomeKind
	server  string
	failure string // for kindTemporary: what went wrong
	timeout bool   // for kindTemporary
}

type outcomeKind uint8

const (
	kindFound outcomeKind = iota
	kindNXDomain
	kindNoData
	kindTemporary
)

// err returns the error a caller asking for name gets, nil for kindFound.
func (o outcome) err(name string) error {
	switch o.kind {
	case kindNXDomain:
		return &net.DNSError{Err: ErrNoSuchHost, Name: name, Server: o.server, IsNotFound: true}
	case kindNoData:
		return &net.DNSError{Err: ErrNoSuchRecord, Name: name, Server: o.server, IsNotFound: true}
	case kindTemporary:
		return &net.DNSError{Err: o.failure, Name: name, Server: o.server, IsTimeout: o.timeout, IsTemporary: true}
	}
	return nil
}

// ctxError is the error of a caller that stopped waiting because its own
// context ended.
func ctxError(ctx context.Context, name string) error {
	err := ctx.Err()
	return &net.DNSError{
		Err:         err.Error(),
		Name:        name,
		IsTimeout:   errors.Is(err, context.DeadlineExceeded),
		IsTemporary: true,
	}
}
