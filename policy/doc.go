// Package policy implements the Postfix SMTPD policy delegation protocol
// (SMTPD_POLICY_README) and the decision pipeline postgate's checks plug
// into.
//
// # Protocol
//
// Postfix writes "name=value" lines ended by an empty line and reads back
// "action=..." and an empty line, many times on one connection. ReadRequest
// parses a request within Limits; Server answers every request it can read
// (an unknown request type or a line without "=" gets DUNNO, never silence)
// and closes the connection, with one log line, on anything that leaves the
// stream out of sync (limits exceeded, end of stream inside a request).
//
// # Decisions
//
// A Pipeline runs its Checks in order at protocol_state RCPT, each on its own
// view of a Decision. The action is composed in one place with the
// precedence reject > defer > defer_if_permit > PREPEND > DUNNO. A check that
// errs, panics or outlives the deadline is skipped (fail open), logged and
// counted; it never causes a 5xx. SASL-authenticated clients and clients in
// TrustedNetworks get DUNNO without any check running.
//
// # Headers (PREPEND)
//
// Postfix takes a single action per reply, and PREPEND is not final: Postfix
// goes on evaluating its restrictions after it. Postfix also asks once per
// recipient, with the same "instance" attribute for every recipient of one
// message, so a header returned on every reply would appear once per
// recipient. The pipeline therefore keeps, per instance, the names of the
// headers already emitted or still pending (a HeaderCache, bounded in size
// and forgotten an hour after last use):
//
//   - headers asked for by checks are queued, at most one per header name
//     per message (the first wins); later ones of the same name are dropped;
//   - each reply for that instance that would otherwise be DUNNO carries the
//     oldest pending header as "PREPEND name: value";
//   - a reject, defer or defer_if_permit reply carries none; pending headers
//     wait for the next reply of the message.
//
// So a message with two recipients and two headers (say Received-SPF and
// X-Greylist) gets one at each RCPT. With one recipient the second header
// is sent only if the service is also called from smtpd_data_restrictions:
// requests at protocol_state DATA run no checks but drain pending headers.
// Requests at END-OF-MESSAGE never carry one (Postfix does not allow PREPEND
// there).
package policy
