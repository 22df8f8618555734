package dkim

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// addressParser ignores the charset of encoded words: only the addr-spec
// matters, and an unknown charset in a display name must not stop signing.
var addressParser = &mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// Field is one header field as a milter receives it. Name has no colon.
// Value is every byte after the colon, as received: the leading space kept
// (negotiate the milter leading-space option, or put back the single space
// the MTA stripped), folded lines with LF or CRLF (a lone LF becomes CRLF).
type Field struct {
	Name, Value string
}

// raw returns the field as it is hashed: "Name:Value" ending in CRLF, with
// every lone LF turned into CRLF.
func (f Field) raw() string {
	var b strings.Builder
	b.Grow(len(f.Name) + len(f.Value) + 8)
	b.WriteString(f.Name)
	b.WriteByte(':')
	writeCRLF(&b, f.Value)
	b.WriteString("\r\n")
	return b.String()
}

// writeCRLF writes a header value with every line break as CRLF. A line
// break not followed by a space or tab (which a real MTA never passes) gets
// a tab, so the value cannot smuggle in a header field of its own.
func writeCRLF(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' && (i == 0 || s[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(c)
		if c == '\n' && (i+1 == len(s) || s[i+1] != ' ' && s[i+1] != '\t') {
			b.WriteByte('\t')
		}
	}
}

// headerBlock renders fields as the message header, blank line included.
func headerBlock(fields []Field) []byte {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(f.raw())
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// Author returns the address a signing decision is made on: the addr-spec of
// the one mailbox in the one From: header field, with the domain lower-cased
// (the local part is kept as written). No From:, more than one From: field,
// several mailboxes, a group, or an unparsable value is an error: such a
// message is not signed.
func Author(fields []Field) (string, error) {
	var from *Field
	for i := range fields {
		if strings.EqualFold(strings.TrimSpace(fields[i].Name), "From") {
			if from != nil {
				return "", errors.New("more than one From: header field")
			}
			from = &fields[i]
		}
	}
	if from == nil {
		return "", errors.New("no From: header field")
	}
	// Unfold before parsing: net/mail does not take CRLF inside a value.
	v := strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(from.Value)
	list, err := addressParser.ParseList(v)
	if err != nil {
		return "", fmt.Errorf("From: %w", err)
	}
	if len(list) != 1 {
		return "", fmt.Errorf("From: has %d mailboxes, want one", len(list))
	}
	addr := list[0].Address
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("From: address %q has no domain", addr)
	}
	return addr[:at] + "@" + strings.ToLower(addr[at+1:]), nil
}
