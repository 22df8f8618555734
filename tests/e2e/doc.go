// Package e2e holds postgate's end-to-end tests: a private Postfix instance
// (MX smtpd with check_policy_service and smtpd_milters, a submission service
// with Dovecot SASL), postgate built from the tree with a configuration
// derived from configs/, an in-process DNS server for the test zones and a
// sink that stores what Postfix delivers. The tests need root and the Debian
// packages postfix, swaks and dovecot-core; without them they skip.
//
// Run with `go test -count=1 -v ./tests/e2e/` (or `make e2e`). Each scenario
// prints `PASS name`, `FAIL name: reason` or `SKIP name: reason`, and the
// run ends with `N passed, N failed, N skipped`. POSTGATE_E2E_KEEP=1 keeps
// the temporary directory (configs, logs, queue) for inspection.
package e2e
