package milter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"postgate/dkim"
)

// maxHeaderBytes caps the header kept per message. Postfix's own
// header_size_limit is 100 KB; past this the message passes untouched.
const maxHeaderBytes = 1 << 20

const authResults = "Authentication-Results"

// connInfo is what the MTA said at connect.
type connInfo struct {
	host       string
	family     string // "tcp4", "tcp6", "unix", "unknown"
	port       uint16
	addr       netip.Addr
	daemonName string
}

func (ci connInfo) String() string {
	if ci.addr.IsValid() {
		return ci.host + "[" + ci.addr.String() + "]"
	}
	return ci.host
}

// localSubmission tells whether the connection is Postfix's emulation of one
// for mail submitted with sendmail(1) (non_smtpd_milters): cleanup presents
// it as "localhost", 127.0.0.1, port 0, AF_INET (cleanup_milter.c).
func (ci connInfo) localSubmission() bool {
	return ci.family == "tcp4" && ci.port == 0 && ci.addr == netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// backend is go-milter's handler for one message; go-milter makes a fresh
// one after every final answer, so anything that must last the whole
// connection lives in conn.
type backend struct {
	conn *conn
	msg  *message
}

// message is one message between MAIL FROM and its end.
type message struct {
	cfg         *config
	start       time.Time
	queueID     string
	authAuthen  string
	daemonName  string // if sent at MAIL rather than at connect
	fields      []dkim.Field
	headerBytes int
	tooBig      bool

	mode     string // "sign" or "verify", decided at the end of the header
	origin   string // why it originates here; "" when it does not
	author   string
	keys     []*dkim.Key
	signer   *dkim.Signer
	verifier *dkim.Verifier
	cancel   context.CancelFunc
	startErr error // the signer or verifier could not start
	bodyErr  error
}

var _ gomilter.Milter = (*backend)(nil)

// reply is the answer to an event the MTA may have agreed not to wait for.
func (b *backend) reply(opt gomilter.OptProtocol) gomilter.Response {
	if b.conn.noReply&opt != 0 {
		return nil // go-milter sends nothing for a nil response
	}
	return gomilter.RespContinue
}

func (b *backend) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	ci := connInfo{host: host, family: family, port: port, daemonName: m.Macros["{daemon_name}"]}
	if a, ok := netip.AddrFromSlice(addr); ok {
		ci.addr = a.Unmap()
	} else if a, err := netip.ParseAddr(m.Macros["{client_addr}"]); err == nil {
		ci.addr = a.Unmap()
	}
	b.conn.connect = ci
	return gomilter.RespContinue, nil
}

func (b *backend) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (b *backend) MailFrom(_ string, m *gomilter.Modifier) (gomilter.Response, error) {
	b.dropMessage("aborted")
	msg := b.newMessage()
	// The macro map is replaced by the next macro packet: copy now.
	msg.authAuthen = m.Macros["{auth_authen}"]
	msg.queueID = m.Macros["i"]
	msg.daemonName = m.Macros["{daemon_name}"]
	return gomilter.RespContinue, nil
}

func (b *backend) newMessage() *message {
	b.msg = &message{cfg: b.conn.srv.cfg.Load(), start: time.Now()}
	b.conn.inMessage.Store(true)
	return b.msg
}

func (b *backend) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (b *backend) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	msg := b.msg
	if msg == nil { // MAIL FROM not reported to us
		msg = b.newMessage()
	}
	if id := m.Macros["i"]; id != "" && msg.queueID == "" {
		msg.queueID = id
	}
	if msg.tooBig {
		return b.reply(gomilter.OptNoHeaderReply), nil
	}
	msg.headerBytes += len(name) + len(value) + 3
	if msg.headerBytes > maxHeaderBytes {
		msg.tooBig, msg.fields = true, nil
		return b.reply(gomilter.OptNoHeaderReply), nil
	}
	msg.fields = append(msg.fields, dkim.Field{Name: name, Value: b.rawValue(value)})
	return b.reply(gomilter.OptNoHeaderReply), nil
}

// rawValue returns the header value as it is in the message, after the
// colon. With the leading-space option it arrives that way. Without it
// Postfix (like Sendmail) ate one space after the colon, a tab never: put the
// space back unless the value starts with a tab, which is the likelier
// original in both cases (only "Name: \tvalue" comes out wrong).
func (b *backend) rawValue(v string) string {
	if b.conn.leadSpace || strings.HasPrefix(v, "\t") {
		return v
	}
	return " " + v
}

func (b *backend) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	msg := b.msg
	if msg == nil {
		msg = b.newMessage()
	}
	if id := m.Macros["i"]; id != "" && msg.queueID == "" {
		msg.queueID = id
	}
	b.startMessage(msg)
	return b.reply(gomilter.OptNoEOHReply), nil
}

// originates says why the message originates here, or "".
func (b *backend) originates(msg *message) string {
	ci := b.conn.connect
	switch {
	case msg.authAuthen != "":
		return "auth"
	case msg.cfg.isOriginatingDaemon(ci.daemonName), msg.cfg.isOriginatingDaemon(msg.daemonName):
		return "daemon"
	case ci.localSubmission():
		return "local"
	case msg.cfg.isInternal(ci.addr):
		return "internal"
	}
	return ""
}

// startMessage decides to sign or verify and starts hashing.
func (b *backend) startMessage(msg *message) {
	if msg.tooBig {
		return
	}
	cfg := msg.cfg
	msg.origin = b.originates(msg)
	if msg.origin != "" && cfg.keyring != nil {
		if author, err := dkim.Author(msg.fields); err == nil {
			msg.author = author
			msg.keys = cfg.keyring.Lookup(author)
		}
	}
	if len(msg.keys) > 0 {
		msg.mode = "sign"
		msg.signer, msg.startErr = dkim.NewSigner(msg.keys, msg.fields, cfg.signOpts)
		return
	}
	msg.mode = "verify"
	var ctx context.Context
	ctx, msg.cancel = context.WithCancel(context.Background())
	msg.verifier, msg.startErr = dkim.NewVerifier(ctx, msg.fields, cfg.verifyOpts)
}

func (b *backend) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	msg := b.msg
	if msg == nil || msg.bodyErr != nil || msg.startErr != nil {
		return b.reply(gomilter.OptNoBodyReply), nil
	}
	switch {
	case msg.signer != nil:
		_, msg.bodyErr = msg.signer.Write(chunk)
	case msg.verifier != nil:
		_, msg.bodyErr = msg.verifier.Write(chunk)
	}
	return b.reply(gomilter.OptNoBodyReply), nil
}

func (b *backend) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	msg := b.msg
	b.msg = nil
	b.conn.inMessage.Store(false)
	if msg == nil {
		return gomilter.RespAccept, nil
	}
	if id := m.Macros["i"]; id != "" {
		msg.queueID = id
	}
	if msg.mode == "" && !msg.tooBig { // no end-of-header event
		b.startMessage(msg)
	}
	if msg.cancel != nil {
		defer msg.cancel()
	}
	switch {
	case msg.tooBig:
		b.logMessage(msg, "skipped", Accept, "err", "header over 1 MiB")
		return gomilter.RespAccept, nil
	case msg.mode == "sign":
		return b.endSign(msg, m)
	default:
		return b.endVerify(msg, m)
	}
}

func (b *backend) endSign(msg *message, m *gomilter.Modifier) (gomilter.Response, error) {
	err := msg.startErr
	if err == nil {
		err = msg.bodyErr
	}
	var sigs []dkim.Signature
	if msg.signer != nil {
		if err != nil {
			msg.signer.Abort()
		} else {
			sigs, err = msg.signer.Close()
		}
	}
	if err != nil {
		// Fail open, like milter_default_action=accept: the message goes
		// out unsigned and the log says why.
		b.logMessage(msg, "sign_error", Accept, "err", err.Error())
		return gomilter.RespAccept, nil
	}
	// Each insert at index 0 lands on top: insert the last first, so the
	// signatures end up in key order.
	for i := len(sigs) - 1; i >= 0; i-- {
		if err := m.InsertHeader(0, sigs[i].Name, b.headerValue(sigs[i].Value)); err != nil {
			return nil, fmt.Errorf("insert %s: %w", sigs[i].Name, err)
		}
	}
	b.logMessage(msg, "signed", Accept)
	return gomilter.RespAccept, nil
}

func (b *backend) endVerify(msg *message, m *gomilter.Modifier) (gomilter.Response, error) {
	cfg := msg.cfg
	var results []dkim.Result
	err := msg.startErr
	if err == nil {
		err = msg.bodyErr
	}
	if msg.verifier != nil {
		if err != nil {
			msg.verifier.Abort()
		} else {
			results, err = msg.verifier.Close()
		}
	}
	if err != nil {
		results = []dkim.Result{{Status: dkim.StatusTempError, Err: err}}
	}

	// Forged Authentication-Results with our id go, highest index first.
	for _, idx := range ownAuthResults(msg.fields, cfg.authservID) {
		if err := m.ChangeHeader(idx, authResults, ""); err != nil {
			return nil, fmt.Errorf("delete %s #%d: %w", authResults, idx, err)
		}
	}
	ar := foldAuthResults(dkim.AuthResults(cfg.authservID, results))
	if err := m.InsertHeader(0, authResults, b.headerValue(ar)); err != nil {
		return nil, fmt.Errorf("insert %s: %w", authResults, err)
	}

	status, action := verdict(results, cfg.verdicts)
	b.logMessage(msg, string(status), action, "results", describeResults(results))
	switch action {
	case Reject:
		return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "550 5.7.20 No passing DKIM signature found"), nil
	case TempFail:
		return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "451 4.7.20 DKIM signatures could not be verified, try again later"), nil
	}
	return gomilter.RespAccept, nil
}

// headerValue is what to send for an added header value: the MTA adds the
// space after the colon itself unless the leading-space option is on.
func (b *backend) headerValue(v string) string {
	if b.conn.leadSpace {
		return " " + v
	}
	return v
}

func (b *backend) Abort(*gomilter.Modifier) error {
	b.dropMessage("aborted")
	b.conn.inMessage.Store(false)
	return nil
}

// dropMessage abandons the message in progress, if any.
func (b *backend) dropMessage(result string) {
	msg := b.msg
	if msg == nil {
		return
	}
	b.msg = nil
	if msg.signer != nil {
		msg.signer.Abort()
	}
	if msg.verifier != nil {
		msg.verifier.Abort()
	}
	if msg.cancel != nil {
		msg.cancel()
	}
	mode := msg.mode
	if mode == "" {
		mode = "none"
	}
	b.conn.srv.metrics.messages.WithLabelValues(mode, result).Inc()
}

// logMessage writes the one line per message and counts it.
func (b *backend) logMessage(msg *message, result string, action Action, extra ...any) {
	d := time.Since(msg.start)
	mode := msg.mode
	if mode == "" {
		mode = "none"
	}
	mets := b.conn.srv.metrics
	mets.messages.WithLabelValues(mode, result).Inc()
	mets.duration.WithLabelValues(mode).Observe(d.Seconds())

	args := []any{
		"queue_id", msg.queueID,
		"client", b.conn.connect.String(),
		"mode", mode,
		"result", result,
		"action", string(action),
	}
	if msg.origin != "" {
		args = append(args, "origin", msg.origin)
	}
	if msg.author != "" {
		args = append(args, "author", msg.author)
	}
	if msg.mode == "sign" {
		var keys []string
		for _, k := range msg.keys {
			keys = append(keys, "d="+k.Domain+" s="+k.Selector+" a="+k.Algorithm())
		}
		args = append(args, "keys", strings.Join(keys, ", "))
	}
	args = append(args, extra...)
	args = append(args, "duration", d.Round(time.Microsecond))
	msg.cfg.log.Info("milter: message", args...)
}

// ownAuthResults returns the 1-based indices, among the message's
// Authentication-Results fields, of those carrying authservID, highest
// first: deleting one shifts the indices of the later ones.
func ownAuthResults(fields []dkim.Field, authservID string) []int {
	var idx []int
	n := 0
	for _, f := range fields {
		if !strings.EqualFold(strings.TrimSpace(f.Name), authResults) {
			continue
		}
		n++
		if dkim.HasAuthServID(f.Value, authservID) {
			idx = append(idx, n)
		}
	}
	for i, j := 0, len(idx)-1; i < j; i, j = i+1, j-1 {
		idx[i], idx[j] = idx[j], idx[i]
	}
	return idx
}

// foldAuthResults puts each result of a long Authentication-Results value
// on a line of its own (LF: the MTA writes its own line ends).
func foldAuthResults(v string) string {
	if len(v) <= 76 {
		return v
	}
	return strings.ReplaceAll(v, "; dkim=", ";\n\tdkim=")
}

// statusRank orders results from best to worst for the message's result.
var statusRank = map[dkim.Status]int{
	dkim.StatusPass:      0,
	dkim.StatusTempError: 1,
	dkim.StatusNeutral:   2,
	dkim.StatusPolicy:    3,
	dkim.StatusFail:      4,
	dkim.StatusPermError: 5,
}

// actionRank: the mildest action of the results wins.
var actionRank = map[Action]int{Accept: 0, TempFail: 1, Reject: 2}

// verdict returns the message's result (its best signature's, or none) and
// what to do with it.
func verdict(results []dkim.Result, verdicts map[dkim.Status]Action) (dkim.Status, Action) {
	if len(results) == 0 {
		return dkim.StatusNone, actionFor(dkim.StatusNone, verdicts)
	}
	best := results[0].Status
	action := actionFor(best, verdicts)
	for _, r := range results {
		if rank(r.Status) < rank(best) {
			best = r.Status
		}
		if a := actionFor(r.Status, verdicts); actionRank[a] < actionRank[action] {
			action = a
		}
	}
	if best == dkim.StatusPass {
		return best, Accept
	}
	return best, action
}

func rank(s dkim.Status) int {
	if r, ok := statusRank[s]; ok {
		return r
	}
	return len(statusRank)
}

func actionFor(s dkim.Status, verdicts map[dkim.Status]Action) Action {
	if a, ok := verdicts[s]; ok {
		return a
	}
	return Accept
}

func describeResults(results []dkim.Result) string {
	if len(results) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, r := range results {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s d=%s s=%s", r.Status, r.Domain, r.Selector)
		if r.Err != nil {
			fmt.Fprintf(&b, " (%v)", r.Err)
		}
	}
	return b.String()
}
