package milter

import (
	"encoding/binary"
	"fmt"

	gomilter "github.com/emersion/go-milter"
)

// optNeg is what one side says in the milter option negotiation (SMFIC_OPTNEG).
type optNeg struct {
	version  uint32
	actions  gomilter.OptAction
	protocol gomilter.OptProtocol
}

// parseOptNeg reads an OPTNEG packet body: the command byte 'O', then the
// version, action mask and protocol mask, each a big-endian uint32.
func parseOptNeg(p []byte) (optNeg, error) {
	if len(p) < 13 {
		return optNeg{}, fmt.Errorf("OPTNEG of %d bytes, want at least 13", len(p))
	}
	if p[0] != byte(gomilter.CodeOptNeg) {
		return optNeg{}, fmt.Errorf("first command %q, want OPTNEG 'O'", p[0])
	}
	o := optNeg{
		version:  binary.BigEndian.Uint32(p[1:]),
		actions:  gomilter.OptAction(binary.BigEndian.Uint32(p[5:])),
		protocol: gomilter.OptProtocol(binary.BigEndian.Uint32(p[9:])),
	}
	if o.version < 2 {
		return optNeg{}, fmt.Errorf("MTA speaks milter protocol version %d, want 2 or later", o.version)
	}
	return o, nil
}

// The protocol options the milter asks for when the MTA offers them.
const (
	// Events it does not need.
	wantSkip = gomilter.OptNoHelo | gomilter.OptNoRcptTo | gomilter.OptNoData | gomilter.OptNoUnknown
	// Events it never answers but at the end of the message: Postfix then
	// streams headers and body without waiting for a reply to each.
	wantNoReply = gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply
	// Header values with the leading space, byte-exact.
	wantLeadSpace = gomilter.OptHeaderLeadingSpace

	// Actions: insert headers (signatures, Authentication-Results) and
	// delete them (forged Authentication-Results). Asked for regardless of
	// the offer: without them the milter is useless, and the MTA says so.
	needActions = gomilter.OptAddHeader | gomilter.OptChangeHeader
)

// symList asks for the macros each stage needs (overriding Postfix's
// milter_*_macros for this milter), so a trimmed Postfix configuration
// cannot silently turn signing off.
var symList = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"{daemon_name}", "{client_addr}", "j"},
	gomilter.StageMailFrom: {"i", "{auth_authen}", "{auth_type}"},
	gomilter.StageEOH:      {"i"},
	gomilter.StageEOM:      {"i"},
}

// negotiate answers the MTA's offer. go-milter replies with version 2 but
// sends whatever masks it is given; Postfix honours version 6 options
// (no-reply, leading space, symbol lists) from a version 2 milter.
func negotiate(mta optNeg) optNeg {
	return optNeg{
		version:  2,
		actions:  needActions | mta.actions&gomilter.OptSetSymList,
		protocol: mta.protocol & (wantSkip | wantNoReply | wantLeadSpace),
	}
}
