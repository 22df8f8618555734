// Package greylist implements greylisting with postgrey 1.37 semantics (and a few
// improvements), keeping its state in a [Store] (bbolt by default, see [OpenBolt]).
// Several MX hosts share one greylist in Redis ([OpenRedis]); [Migrate] copies a bbolt file there.
//
// A mail is identified by its triplet: the client network (the client IP masked to
// [Config.IPv4Prefix] / [Config.IPv6Prefix], or [Input.Origin] when the caller has an
// SPF-validated sender domain), the normalised envelope sender and the recipient, all
// lower-cased and joined with '/': "192.0.2.0/user@example.org/rcpt@example.net".
//
// The first time a triplet is seen the mail is deferred. A retry after [Config.Delay]
// and within [Config.RetryWindow] (both measured from the first attempt) passes; the
// triplet is then known and passes without delay until it has not been seen for
// [Config.MaxAge]. A client IP whose triplets passed greylisting on
// [Config.AutoWhitelistAfter] different hours is auto-whitelisted (postgrey's
// --auto-whitelist-clients).
//
// Differences from postgrey 1.37, on purpose:
//   - Senders are also normalised for SRS0/SRS1, btv1/msprvs1 BATV variants and long
//     hexadecimal tokens (Amazon SES, Mailchimp...), see [NormalizeSender].
//   - An early retry does not rewrite the record, and a passed triplet's last-seen time is
//     rewritten at most once an hour: known mail takes a read-only path.
//   - Expired entries are deleted in small batches by [Greylister.Sweep] while requests
//     keep being answered; postgrey's nightly expiry blocked all replies.
//   - In a client whitelist, "a.b" means a.b.0.0/16 (postgrey documents "leave off
//     numbers", but its code takes a.b as a.b.0.0/24).
//   - Privacy mode hashes keys with SHA-256 (postgrey --privacy uses SHA-1), so a
//     database is not shared between the two.
package greylist
