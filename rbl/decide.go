package rbl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Thresholds are the [rbl] keys reject_score, greylist_score and
// allowlist_score.
type Thresholds struct {
	Reject    int // reject at or above; 0 = never reject
	Greylist  int // greylist new triplets only at or above; 0 = greylist all, as without lists
	Allowlist int // at or below: skip greylisting
}

// DefaultThresholds are the documented defaults of the keys.
var DefaultThresholds = Thresholds{Reject: 3, Greylist: 0, Allowlist: -1}

// Validate rejects thresholds that contradict each other, so that a typo
// cannot make every client both allowlisted and rejected.
func (t Thresholds) Validate() error {
	switch {
	case t.Reject < 0:
		return fmt.Errorf("reject_score %d: must be positive, or 0 to never reject", t.Reject)
	case t.Greylist < 0:
		return fmt.Errorf("greylist_score %d: must be positive, or 0 to greylist every new triplet", t.Greylist)
	case t.Reject > 0 && t.Allowlist >= t.Reject:
		return fmt.Errorf("allowlist_score %d must be below reject_score %d", t.Allowlist, t.Reject)
	case t.Greylist > 0 && t.Allowlist >= t.Greylist:
		return fmt.Errorf("allowlist_score %d must be below greylist_score %d", t.Allowlist, t.Greylist)
	case t.Reject > 0 && t.Greylist > t.Reject:
		return fmt.Errorf("greylist_score %d above reject_score %d is never reached", t.Greylist, t.Reject)
	}
	return nil
}

// GreylistsByDefault reports whether a Neutral outcome still greylists a
// new triplet (greylist_score = 0: every new triplet, as without lists).
func (t Thresholds) GreylistsByDefault() bool { return t.Greylist == 0 }

// Outcome is what the lists ask of the policy pipeline.
type Outcome int

const (
	// Neutral: the lists have no say. The pipeline greylists a new triplet
	// iff Thresholds.GreylistsByDefault.
	Neutral Outcome = iota
	// Reject: score >= reject_score (> 0). Reply with RejectText.
	Reject
	// RequireGreylisting: greylist_score > 0 and score >= greylist_score.
	RequireGreylisting
	// WaiveGreylisting: score <= allowlist_score; skip greylisting.
	WaiveGreylisting
)

func (o Outcome) String() string {
	switch o {
	case Neutral:
		return "neutral"
	case Reject:
		return "reject"
	case RequireGreylisting:
		return "require greylisting"
	case WaiveGreylisting:
		return "waive greylisting"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Decide applies t to the score. It is a pure function of the score.
func (r Report) Decide(t Thresholds) Outcome {
	switch {
	case t.Reject > 0 && r.Score >= t.Reject:
		return Reject
	case r.Score <= t.Allowlist:
		return WaiveGreylisting
	case t.Greylist > 0 && r.Score >= t.Greylist:
		return RequireGreylisting
	}
	return Neutral
}

// explain says what an outcome means for the mail, for the CLI.
func explain(o Outcome, score int, t Thresholds) string {
	switch o {
	case Reject:
		return fmt.Sprintf("reject (score %d >= reject_score %d)", score, t.Reject)
	case WaiveGreylisting:
		return fmt.Sprintf("skip greylisting (score %d <= allowlist_score %d)", score, t.Allowlist)
	case RequireGreylisting:
		return fmt.Sprintf("greylist new triplets (score %d >= greylist_score %d)", score, t.Greylist)
	}
	if t.GreylistsByDefault() {
		return fmt.Sprintf("no effect: new triplets are greylisted as usual (score %d)", score)
	}
	return fmt.Sprintf("no effect: not greylisted (score %d < greylist_score %d)", score, t.Greylist)
}

// RejectText is the reply for a reject, like Postfix's reject_rbl_client:
//
//	554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org; <reason>
//
// reason (from Checker.Reason) may be empty; it is made safe for an SMTP
// reply here too. The zone is the configured one, never with a DQS key.
func RejectText(hit Result, reason string) string {
	what := "client"
	switch {
	case hit.Targets&TargetIP != 0:
	case hit.Targets&TargetSender != 0:
		what = "sender domain"
	case hit.Targets&TargetHelo != 0:
		what = "helo"
	case hit.Targets&TargetClientName != 0:
		what = "client name"
	}
	s := fmt.Sprintf("554 5.7.1 Service unavailable; %s [%s] blocked using %s", what, hit.Subject, hit.List.Zone)
	if reason = sanitizeReason(reason); reason != "" {
		s += "; " + reason
	}
	return s
}

// FormatReport writes the report of `postgate rbl check`: for each list the
// name queried, the answer, its meaning and the weight counted, then the
// score and what the thresholds make of it. DQS keys are masked.
func FormatReport(w io.Writer, r Report, t Thresholds) error {
	if _, err := fmt.Fprintf(w, "checking %s\n", describe(r.Query)); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LIST\tTARGET\tQUERY\tANSWER\tWEIGHT\tRESULT")
	for _, res := range r.Results {
		answer := "-"
		if len(res.Answers) > 0 {
			s := make([]string, len(res.Answers))
			for i, a := range res.Answers {
				s[i] = a.String()
			}
			answer = strings.Join(s, ",")
		} else if res.Status == NotListed {
			answer = "none"
		}
		query := res.Name
		if query == "" {
			query = "-"
		}
		result := res.Status.String()
		if res.Meaning != "" && res.Meaning != result {
			result += ": " + res.Meaning
		}
		if res.Status == Listed && res.Weight == 0 {
			result += " (entry already counted)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
			res.List.String(), res.Targets, query, answer, weight(res), result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "score %d: %s\n", r.Score, explain(r.Decide(t), r.Score, t))
	return err
}

// describe lists the non-empty fields of a query.
func describe(q Query) string {
	var parts []string
	if q.ClientIP.IsValid() {
		parts = append(parts, "client_ip="+q.ClientIP.String())
	}
	if q.SenderDomain != "" && q.SenderDomain == q.Helo && q.Helo == q.ClientName {
		return strings.Join(append(parts, "domain="+q.SenderDomain), " ")
	}
	for _, f := range []struct{ k, v string }{{"sender", q.SenderDomain}, {"helo", q.Helo}, {"client_name", q.ClientName}} {
		if f.v != "" {
			parts = append(parts, f.k+"="+f.v)
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " ")
}

func weight(res Result) string {
	if res.Weight == 0 {
		return "0"
	}
	return fmt.Sprintf("%+d", res.Weight)
}
