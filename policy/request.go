package policy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// RequestType is the only request type Postfix sends to a policy service.
const RequestType = "smtpd_access_policy"

// Attr is one attribute of a request, exactly as received.
type Attr struct {
	Name, Value string
}

// Request is one Postfix policy delegation request (SMTPD_POLICY_README).
// Values are kept exactly as sent: nothing is lower-cased or trimmed. When an
// attribute appears twice the typed field holds the last value; Attrs keeps both.
type Request struct {
	Request       string // "smtpd_access_policy"
	ProtocolState string // CONNECT, EHLO, HELO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY, ETRN
	ProtocolName  string // SMTP, ESMTP, LMTP
	HeloName      string
	QueueID       string
	Sender        string // "" is the null sender
	Recipient     string
	// RecipientCount is 0 before the end of the message (Postfix sends the real
	// count only at END-OF-MESSAGE).
	RecipientCount         int
	ClientAddress          string
	ClientName             string // "unknown" when forward-confirmed reverse DNS failed
	ReverseClientName      string
	Instance               string // the same for every recipient of one message
	SASLMethod             string
	SASLUsername           string
	SASLSender             string
	Size                   int64
	CCertSubject           string
	CCertIssuer            string
	CCertFingerprint       string
	CCertPubkeyFingerprint string
	EncryptionProtocol     string
	EncryptionCipher       string
	EncryptionKeysize      int
	ETRNDomain             string
	Stress                 string // "yes" when smtpd runs in stress mode
	ClientPort             int
	PolicyContext          string
	ServerAddress          string
	ServerPort             int
	// CompatibilityLevel and MailVersion are sent by Postfix 3.8 and later.
	CompatibilityLevel string
	MailVersion        string

	// ClientIP is ClientAddress parsed, with IPv4-mapped IPv6 addresses
	// unmapped; the zero Addr when the address does not parse.
	ClientIP netip.Addr

	// Attrs holds every attribute in the order received, unknown ones included.
	Attrs []Attr
}

// Get returns the last value of the named attribute, or "" when absent.
func (r *Request) Get(name string) string {
	for i := len(r.Attrs) - 1; i >= 0; i-- {
		if r.Attrs[i].Name == name {
			return r.Attrs[i].Value
		}
	}
	return ""
}

// Limits bound what one request may use. A zero field takes its default.
type Limits struct {
	MaxLineLength  int // bytes in one "name=value" line, newline excluded; default 4096
	MaxAttributes  int // attribute lines in one request; default 128
	MaxRequestSize int // bytes in one request, newlines included; default 32768
}

// Defaults well above what Postfix 3.x sends (about 30 attributes, well under
// 2 KB, with Postfix's own line_length_limit of 2048 on the client side).
const (
	DefaultMaxLineLength  = 4096
	DefaultMaxAttributes  = 128
	DefaultMaxRequestSize = 32 << 10
)

func (l Limits) withDefaults() Limits {
	if l.MaxLineLength <= 0 {
		l.MaxLineLength = DefaultMaxLineLength
	}
	if l.MaxAttributes <= 0 {
		l.MaxAttributes = DefaultMaxAttributes
	}
	if l.MaxRequestSize <= 0 {
		l.MaxRequestSize = DefaultMaxRequestSize
	}
	return l
}

// Errors wrapped in a *ProtocolError by ReadRequest. A clean end of stream
// between requests is io.EOF itself; other I/O errors (timeouts, resets) are
// returned unwrapped.
var (
	// ErrMalformed: a line without "=" or with an empty name. The whole
	// request was consumed, so the stream is still in sync and the
	// connection can go on.
	ErrMalformed = errors.New("malformed attribute line")
	// ErrLineTooLong, ErrTooManyAttributes, ErrRequestTooLarge: a limit was
	// exceeded; the rest of the request was not read, so the connection
	// must be closed.
	ErrLineTooLong       = errors.New("line too long")
	ErrTooManyAttributes = errors.New("too many attributes")
	ErrRequestTooLarge   = errors.New("request too large")
	// ErrTruncated: the stream ended inside a request.
	ErrTruncated = errors.New("end of stream inside a request")
)

// ProtocolError reports a request that breaks the protocol or a limit.
type ProtocolError struct {
	Err  error // one of the Err* values above
	Line int   // 1-based line number within the request
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("policy request line %d: %v", e.Line, e.Err)
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// Kind is a short fixed name for the error, for logs and metric labels.
func (e *ProtocolError) Kind() string {
	switch e.Err {
	case ErrMalformed:
		return "malformed"
	case ErrLineTooLong:
		return "line_too_long"
	case ErrTooManyAttributes:
		return "too_many_attributes"
	case ErrRequestTooLarge:
		return "request_too_large"
	case ErrTruncated:
		return "truncated"
	}
	return "other"
}

// Fatal reports whether the connection can no longer be used: every
// protocol error except ErrMalformed leaves the stream out of sync.
func (e *ProtocolError) Fatal() bool { return e.Err != ErrMalformed }

// ReadRequest reads one request: "name=value" lines up to an empty line.
// It never holds more than lim.MaxRequestSize bytes of a request, whatever
// the client sends. A trailing CR is stripped from each line (clients typed
// by hand); nothing else is changed.
//
// It returns io.EOF when the stream ends cleanly before a request, a
// *ProtocolError for protocol and limit violations, and I/O errors as they
// come from r.
func ReadRequest(r *bufio.Reader, lim Limits) (*Request, error) {
	lim = lim.withDefaults()
	// Postfix requests are under 2 KB; start on the stack.
	var stack [2048]byte
	buf := stack[:0]
	lines := 0
	for {
		start := len(buf)
		for {
			chunk, err := r.ReadSlice('\n')
			// +2: room for "\r\n"; the exact length is checked below.
			if len(buf)-start+len(chunk) > lim.MaxLineLength+2 {
				return nil, &ProtocolError{Err: ErrLineTooLong, Line: lines + 1}
			}
			if len(buf)+len(chunk) > lim.MaxRequestSize {
				return nil, &ProtocolError{Err: ErrRequestTooLarge, Line: lines + 1}
			}
			buf = append(buf, chunk...)
			if err == nil {
				break
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				if len(buf) == 0 {
					return nil, io.EOF
				}
				return nil, &ProtocolError{Err: ErrTruncated, Line: lines + 1}
			}
			return nil, err
		}
		n := len(buf) - 1 // without '\n'
		if n > start && buf[n-1] == '\r' {
			n--
		}
		if n-start > lim.MaxLineLength {
			return nil, &ProtocolError{Err: ErrLineTooLong, Line: lines + 1}
		}
		if n == start { // empty line: end of request
			buf = buf[:start]
			break
		}
		lines++
		if lines > lim.MaxAttributes {
			return nil, &ProtocolError{Err: ErrTooManyAttributes, Line: lines}
		}
		buf = append(buf[:n], '\n')
	}
	return parseRequest(string(buf), lines)
}

// parseRequest parses the attribute lines in s, each ending in '\n'. All
// values are substrings of s: one allocation for the whole request.
func parseRequest(s string, lines int) (*Request, error) {
	req := &Request{Attrs: make([]Attr, 0, lines)}
	line := 0
	for len(s) > 0 {
		line++
		nl := strings.IndexByte(s, '\n') // every line ends in '\n'
		l := s[:nl]
		s = s[nl+1:]
		eq := strings.IndexByte(l, '=')
		if eq <= 0 {
			return nil, &ProtocolError{Err: ErrMalformed, Line: line}
		}
		req.set(l[:eq], l[eq+1:])
	}
	return req, nil
}

func (r *Request) set(name, value string) {
	r.Attrs = append(r.Attrs, Attr{Name: name, Value: value})
	switch name {
	case "request":
		r.Request = value
	case "protocol_state":
		r.ProtocolState = value
	case "protocol_name":
		r.ProtocolName = value
	case "helo_name":
		r.HeloName = value
	case "queue_id":
		r.QueueID = value
	case "sender":
		r.Sender = value
	case "recipient":
		r.Recipient = value
	case "recipient_count":
		r.RecipientCount = atoi(value)
	case "client_address":
		r.ClientAddress = value
		r.ClientIP = netip.Addr{}
		if ip, err := netip.ParseAddr(value); err == nil {
			r.ClientIP = ip.Unmap()
		}
	case "client_name":
		r.ClientName = value
	case "reverse_client_name":
		r.ReverseClientName = value
	case "instance":
		r.Instance = value
	case "sasl_method":
		r.SASLMethod = value
	case "sasl_username":
		r.SASLUsername = value
	case "sasl_sender":
		r.SASLSender = value
	case "size":
		r.Size, _ = strconv.ParseInt(value, 10, 64)
	case "ccert_subject":
		r.CCertSubject = value
	case "ccert_issuer":
		r.CCertIssuer = value
	case "ccert_fingerprint":
		r.CCertFingerprint = value
	case "ccert_pubkey_fingerprint":
		r.CCertPubkeyFingerprint = value
	case "encryption_protocol":
		r.EncryptionProtocol = value
	case "encryption_cipher":
		r.EncryptionCipher = value
	case "encryption_keysize":
		r.EncryptionKeysize = atoi(value)
	case "etrn_domain":
		r.ETRNDomain = value
	case "stress":
		r.Stress = value
	case "client_port":
		r.ClientPort = atoi(value)
	case "policy_context":
		r.PolicyContext = value
	case "server_address":
		r.ServerAddress = value
	case "server_port":
		r.ServerPort = atoi(value)
	case "compatibility_level":
		r.CompatibilityLevel = value
	case "mail_version":
		r.MailVersion = value
	}
}

// atoi parses a number Postfix sends; anything else counts as 0 (the raw
// value stays in Attrs).
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}
