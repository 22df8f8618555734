package spf

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Action is what a Policy does about one result.
type Action string

const (
	// Accept lets the message through with the SPF header.
	Accept Action = "accept"
	// Reject answers 5xx.
	Reject Action = "reject"
	// Defer answers 4xx.
	Defer Action = "defer"
)

// ParseAction parses "accept", "reject" or "defer" (configuration).
func ParseAction(s string) (Action, error) {
	switch a := Action(strings.ToLower(s)); a {
	case Accept, Reject, Defer:
		return a, nil
	}
	return "", fmt.Errorf("unknown SPF action %q (want accept, reject or defer)", s)
}

// Actions says what to do for each result of one identity.
type Actions struct {
	Pass, Fail, SoftFail, Neutral, None, PermError, TempError Action
}

// For returns the action for a result; Accept for anything unset.
func (a Actions) For(result string) Action {
	var x Action
	switch result {
	case Pass:
		x = a.Pass
	case Fail:
		x = a.Fail
	case SoftFail:
		x = a.SoftFail
	case Neutral:
		x = a.Neutral
	case None:
		x = a.None
	case PermError:
		x = a.PermError
	case TempError:
		x = a.TempError
	}
	if x == "" {
		return Accept
	}
	return x
}

// Header kinds a Policy can add.
const (
	HeaderReceivedSPF = "received-spf"
	HeaderAuthResults = "authentication-results"
	HeaderNone        = "none"
)

// Policy turns SPF results into a decision. The zero value accepts
// everything without a header; start from DefaultPolicy.
type Policy struct {
	// Helo and MailFrom are the actions per result of each identity.
	Helo, MailFrom Actions
	// Header is the header added to accepted mail: HeaderReceivedSPF,
	// HeaderAuthResults or HeaderNone ("" is HeaderNone).
	Header string
	// ReceiverName is this host's name: receiver= in Received-SPF and the
	// authserv-id of Authentication-Results.
	ReceiverName string
	// HideReceiver leaves receiver= (and the name in the comment) out of
	// Received-SPF.
	HideReceiver bool
	// DefaultExplanation is the text of a rejection for fail when the
	// domain gives no explanation of its own. It may use the macros of
	// RFC 7208 section 7 (%{s} %{l} %{o} %{d} %{i} %{c} %{h} %{v} %{r}).
	DefaultExplanation string

	// SkipClients are client networks never checked.
	SkipClients []netip.Prefix
	// SkipHelos are HELO names never checked: a name, or ".example.com"
	// for every name below example.com.
	SkipHelos []string
	// WhitelistDomains are sender domains (same form as SkipHelos) whose
	// mail is whitelisted when, and only when, the client passes that
	// domain's SPF: a forged @example.com does not get in.
	WhitelistDomains []string

	// GreylistWaivePass waives greylisting for every MAIL FROM pass.
	GreylistWaivePass bool
	// GreylistWaivePassDomains waives it for a MAIL FROM pass of these
	// domains (same form as SkipHelos).
	GreylistWaivePassDomains []string
	// GreylistRequire lists MAIL FROM results for which greylisting must
	// apply even when something else (a greylist whitelist) would waive it.
	GreylistRequire []string
	// GreylistPassOrigin makes a MAIL FROM pass give the SPF-validated
	// domain as the greylist origin instead of the client network, so that
	// a retry from another address of the domain's pool (or over the other
	// IP version) matches the first attempt.
	GreylistPassOrigin bool
}

// DefaultPolicy mirrors pypolicyd-spf's defaults: MAIL FROM fail is
// rejected, HELO fail is not (it would hide the MAIL FROM result), errors
// only leave a header; localhost is not checked.
func DefaultPolicy() Policy {
	return Policy{
		MailFrom:           Actions{Fail: Reject},
		Header:             HeaderReceivedSPF,
		DefaultExplanation: "SPF validation failed: %{c} is not allowed to send mail for %{d}",
		SkipClients: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		},
		GreylistPassOrigin: true,
	}
}

// Validate checks what configuration could get wrong.
func (p *Policy) Validate() error {
	for _, a := range []Actions{p.Helo, p.MailFrom} {
		for _, x := range []Action{a.Pass, a.Fail, a.SoftFail, a.Neutral, a.None, a.PermError, a.TempError} {
			if x != "" {
				if _, err := ParseAction(string(x)); err != nil {
					return err
				}
			}
		}
	}
	switch p.Header {
	case "", HeaderNone, HeaderReceivedSPF, HeaderAuthResults:
	default:
		return fmt.Errorf("unknown SPF header kind %q", p.Header)
	}
	if err := checkMacroString(p.DefaultExplanation, true, true); err != nil {
		return fmt.Errorf("default explanation: %w", err)
	}
	for _, r := range p.GreylistRequire {
		switch r {
		case Pass, Fail, SoftFail, Neutral, None, PermError, TempError:
		default:
			return fmt.Errorf("greylist require: unknown SPF result %q", r)
		}
	}
	return nil
}

// Skip reports whether a client is not to be checked at all, and why.
// (SASL-authenticated clients and trusted networks are the pipeline's
// business.)
func (p *Policy) Skip(ip netip.Addr, helo string) (bool, string) {
	ip = ip.Unmap()
	for _, n := range p.SkipClients {
		if n.Contains(ip) {
			return true, "client " + ip.String() + " in " + n.String()
		}
	}
	if domainListed(p.SkipHelos, helo) {
		return true, "HELO " + helo + " skipped"
	}
	return false, ""
}

// NeedHelo reports whether the HELO result can change a decision; when
// not, the HELO check may be left out.
func (p *Policy) NeedHelo() bool {
	for _, r := range []string{Pass, Fail, SoftFail, Neutral, None, PermError, TempError} {
		if p.Helo.For(r) != Accept {
			return true
		}
	}
	return false
}

// Outcome is a Policy's decision.
type Outcome struct {
	// Action is Accept, Reject or Defer.
	Action Action
	// Reply is the SMTP reply of a Reject or Defer ("550 5.7.23 ...").
	Reply string
	// Header is the whole header field to prepend to accepted mail
	// ("Received-SPF: ..."), "" for none.
	Header string
	// Whitelisted is set when the sender domain is whitelisted and passed
	// SPF: later checks of the pipeline may be skipped.
	Whitelisted bool
	// GreylistWaive: SPF says greylisting is not needed.
	GreylistWaive bool
	// GreylistRequire: SPF says greylisting must apply whatever else says.
	GreylistRequire bool
	// Origin, when not "", replaces the client network in the greylist
	// triplet: the SPF-validated sender domain.
	Origin string
	// Reason explains the decision, for logs.
	Reason string
}

// Decide turns the results of the two identities into an Outcome. A
// result whose Result is "" was not checked. The HELO result is only ever
// used as the HELO result: it never stands in for a missing MAIL FROM
// result (CVE-2019-20790).
func (p *Policy) Decide(helo, mailfrom Result) Outcome {
	var o Outcome
	if mailfrom.Result == Pass && domainListed(p.WhitelistDomains, mailfrom.Domain) {
		o = Outcome{Action: Accept, Whitelisted: true, GreylistWaive: true,
			Reason: "sender domain " + mailfrom.Domain + " whitelisted and SPF pass"}
		o.Header = p.header(mailfrom)
		p.greylist(&o, mailfrom)
		return o
	}
	if helo.Result != "" {
		if a := p.Helo.For(helo.Result); a != Accept {
			return Outcome{Action: a, Reply: p.reply(a, helo),
				Reason: "HELO " + helo.Helo + " SPF " + helo.Result}
		}
	}
	if mailfrom.Result != "" {
		if a := p.MailFrom.For(mailfrom.Result); a != Accept {
			return Outcome{Action: a, Reply: p.reply(a, mailfrom),
				Reason: "MAIL FROM " + mailfrom.subject() + " SPF " + mailfrom.Result}
		}
	}
	o.Action = Accept
	switch {
	case mailfrom.Result != "":
		o.Header = p.header(mailfrom)
		o.Reason = "MAIL FROM SPF " + mailfrom.Result
	case helo.Result != "":
		o.Header = p.header(helo)
		o.Reason = "HELO SPF " + helo.Result
	default:
		o.Reason = "not checked"
	}
	p.greylist(&o, mailfrom)
	return o
}

func (p *Policy) greylist(o *Outcome, mailfrom Result) {
	if mailfrom.Result == "" {
		return
	}
	if mailfrom.Result == Pass {
		if p.GreylistWaivePass || domainListed(p.GreylistWaivePassDomains, mailfrom.Domain) {
			o.GreylistWaive = true
		}
		if p.GreylistPassOrigin {
			o.Origin = strings.ToLower(strings.TrimSuffix(mailfrom.Domain, "."))
		}
	}
	if slices.Contains(p.GreylistRequire, mailfrom.Result) {
		o.GreylistRequire = true
		o.GreylistWaive = false
	}
}

func (p *Policy) header(r Result) string {
	switch p.Header {
	case HeaderReceivedSPF:
		receiver := p.ReceiverName
		if p.HideReceiver {
			receiver = ""
		}
		return "Received-SPF: " + r.ReceivedSPF(receiver)
	case HeaderAuthResults:
		id := p.ReceiverName
		if id == "" {
			id = "localhost"
		}
		return "Authentication-Results: " + headerValue(id) + "; " + r.AuthResults()
	}
	return ""
}

// maxReplyText bounds the text of a reply: explanations come from DNS and
// an SMTP reply line is at most 512 octets.
const maxReplyText = 400

// reply is the SMTP reply for a Reject or Defer of r. The enhanced status
// codes are RFC 7372's: X.7.23 "SPF validation failed", X.7.24 "SPF
// validation error"; and 4.4.3 "directory server failure" for DNS trouble.
func (p *Policy) reply(a Action, r Result) string {
	var code, text string
	switch r.Result {
	case Fail:
		code, text = "5.7.23", r.Explanation
		if text == "" {
			text = p.defaultExplanation(r)
		}
	case PermError:
		code, text = "5.7.24", "SPF permanent error: "+r.Problem
	case TempError:
		code, text = "5.7.24", "SPF temporary error: "+r.Problem
		if a == Defer {
			code = "4.4.3"
		}
	default:
		code, text = "5.7.23", "SPF "+r.Result+": "+r.Comment()
	}
	basic := "550"
	if a == Defer {
		basic = "451"
		code = "4" + code[1:]
	}
	text = replyText(text)
	return basic + " " + code + " " + text
}

func (p *Policy) defaultExplanation(r Result) string {
	local, domain := "postmaster", r.Helo
	if r.Identity == IdentityMailFrom && r.Sender != "" {
		if i := strings.LastIndexByte(r.Sender, '@'); i >= 0 {
			local, domain = r.Sender[:i], r.Sender[i+1:]
		}
		if local == "" {
			local = "postmaster"
		}
	}
	env := macroEnv{
		sender: local + "@" + domain, local: local, domain: domain,
		helo: r.Helo, ip: r.ClientIP.Unmap(), cur: r.Domain, receiver: p.ReceiverName,
		now: time.Unix(0, 0),
	}
	s, err := expandMacros(p.DefaultExplanation, true, true, &env)
	if err != nil || s == "" {
		return "SPF validation failed"
	}
	return s
}

// replyText makes text fit for an SMTP reply: printable ASCII, bounded.
func replyText(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > maxReplyText {
		b = append(b[:maxReplyText-3], "..."...)
	}
	return strings.TrimSpace(string(b))
}

// domainListed reports whether domain is in list: an entry matches itself,
// an entry ".example.com" every name below example.com. Case and a
// trailing dot do not matter.
func domainListed(list []string, domain string) bool {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if d == "" {
		return false
	}
	for _, e := range list {
		e = strings.ToLower(strings.TrimSuffix(e, "."))
		if strings.HasPrefix(e, ".") {
			if strings.HasSuffix(d, e) {
				return true
			}
		} else if d == e {
			return true
		}
	}
	return false
}
