// Package dkim signs and verifies mail with DKIM (RFC 6376, RFC 8463) on top
// of github.com/emersion/go-msgauth/dkim, loads the signing keys from a
// dkim-filter KeyList or from OpenDKIM's KeyTable + SigningTable, and holds
// every function behind `postgate dkim genkey|testkey|sign|verify` (the CLI
// only parses flags).
//
// # Keys and key tables
//
//	type LoadOptions struct{ AllowGroupReadable bool } // key files readable by group/others are refused unless set
//	type Key struct {
//		Domain   string        // d=, lower-case ("%" in a KeyTable rule: the author's domain)
//		Selector string        // s=
//		Path     string        // the file actually read
//		Signer   crypto.Signer // *rsa.PrivateKey (>= MinRSABits) or ed25519.PrivateKey
//		Identity string        // optional i= (second field of a SigningTable line)
//	}
//	func (k *Key) Algorithm() string // "rsa-sha256" or "ed25519-sha256"
//	func LoadKey(path, domain, selector string, opts LoadOptions) (*Key, error)
//	func ParsePrivateKey(data []byte) (crypto.Signer, error) // PKCS#1/PKCS#8 PEM, dkimpy raw base64 Ed25519 seed
//	const MinRSABits = 1024
//
//	type Keyring struct{ ... } // immutable, safe for concurrent use; a reload builds a new one
//	type Rule struct {
//		Pattern  string // '*' = zero or more characters, case-insensitive
//		Key      *Key
//		Identity string // optional i=, "%" = the author's domain
//	}
//	func NewKeyring(rules []Rule) *Keyring
//	func LoadKeyList(file string, opts LoadOptions) (*Keyring, error)
//	func LoadKeyTables(signingTable, keyTable string, opts LoadOptions) (*Keyring, error)
//	func (kr *Keyring) Lookup(author string) []*Key // nil: no key, do not sign
//	func (kr *Keyring) Len() int
//
//	// The parsers behind the loaders (no key file is opened), fuzzed.
//	type KeyListEntry struct{ Line int; Pattern, Domain, KeyPath, Selector string }
//	type KeyTableEntry struct{ Line int; Name, Domain, Selector, KeyPath string }
//	type SigningTableEntry struct{ Line int; Pattern, KeyName, Identity string }
//	func ParseKeyList(r io.Reader, file string) ([]KeyListEntry, error)
//	func ParseKeyTable(r io.Reader, file string) ([]KeyTableEntry, error)
//	func ParseSigningTable(r io.Reader, file string, refile bool) ([]SigningTableEntry, error)
//
// A load returns a complete Keyring or fails with every problem found, each
// "FILE:LINE: message", joined with errors.Join: on reload the caller keeps
// the old Keyring. '#' starts a comment anywhere on a line (as in
// dkim-filter and OpenDKIM).
//
// KeyList (dkim-filter): "sender-pattern:signing-domain:keypath"; the file
// opened is keypath, else keypath.pem, else keypath.private; the selector is
// the base name of keypath as written ("/etc/dkim/example.com" with
// example.com.private on disk signs with s=example.com).
//
// SigningTable: "refile:PATH" holds '*' patterns tried in file order; "PATH"
// or "file:PATH" is searched like OpenDKIM's non-regex tables: user@host,
// *@host (a postgate addition), host, user@.parent and .parent for each
// parent domain, user@*, *. KeyTable lines are "name domain:selector:keypath"
// (domain "%" = the author's domain; inline key data is refused).
//
// Which address is matched: Author(fields) — the addr-spec of the single
// mailbox in the single From: header field, domain lower-cased; patterns
// match it case-insensitively. No From:, two From: fields, several mailboxes
// or an unparsable From: means Author fails: do not sign.
//
// Several signatures (RSA + Ed25519, RFC 8463): rules are tried in order; the
// first matching rule wins and fixes the signing domain; each later matching
// rule with the same signing domain and a key algorithm not chosen yet adds
// a signature. An rsa rule then an ed25519 rule for one pattern dual-sign;
// two rsa rules sign once (the first).
//
// # Header fields
//
//	// Value is every byte after the colon as received: leading space kept
//	// (negotiate the milter leading-space option, or put back the one space
//	// the MTA stripped); folds in LF or CRLF (a lone LF is hashed as CRLF).
//	type Field struct{ Name, Value string }
//	func Author(fields []Field) (string, error)
//
// # Signing (streaming: memory bounded whatever the body size)
//
//	type SignOptions struct {
//		Canonicalization  string   // "relaxed/relaxed" (default), "simple/simple", ...
//		SignedHeaders     []string // nil: DefaultSignedHeaders; every present instance is signed
//		OversignedHeaders []string // nil: DefaultOversignedHeaders ("From"); one more h= entry each
//	}
//	var DefaultSignedHeaders, DefaultOversignedHeaders []string
//	var ErrNoKey error
//	func ParseCanonicalization(c string) (header, body string, err error)
//	func NewSigner(keys []*Key, fields []Field, opts *SignOptions) (*Signer, error) // SHA-256 always
//	func (s *Signer) Write(body []byte) (int, error)
//	func (s *Signer) Close() ([]Signature, error) // one per key, in key order
//	func (s *Signer) Abort()
//
//	// Value: no leading space, no trailing line break, continuation lines
//	// folded with CRLF + space exactly as hashed. The field on the wire must
//	// be Name + ": " + Value.
//	type Signature struct{ Name, Value string }
//	func (s Signature) ValueLF() string // Value with LF folds, for a milter
//	func (s Signature) String() string  // "Name: Value\r\n"
//
// Received, Return-Path and other fields outside SignedHeaders are never
// signed. A milter without the leading-space option inserts (Name, ValueLF())
// and Postfix writes "Name: value"; with the option negotiated it must insert
// " "+ValueLF(). Insert each at index 0 (above Postfix's Received:).
//
// # Verifying (streaming too)
//
//	type VerifyOptions struct {
//		Resolver         resolver.Resolver // TXT at selector._domainkey.domain
//		Timeout          time.Duration     // per key lookup; default DefaultLookupTimeout (5s)
//		MaxVerifications int               // default DefaultMaxVerifications (5), from the top; the rest ignored
//		Logger           *slog.Logger      // nil: slog.Default()
//	}
//	func NewVerifier(ctx context.Context, fields []Field, opts *VerifyOptions) (*Verifier, error)
//	func (v *Verifier) Write(body []byte) (int, error) // may block for a key lookup (bounded by Timeout)
//	func (v *Verifier) Close() ([]Result, error)       // empty: unsigned (dkim=none)
//	func (v *Verifier) Abort()                         // cancels pending lookups
//
//	type Status string // StatusPass, StatusFail, StatusPolicy (l= used), StatusTempError,
//	                   // StatusPermError, StatusNone, StatusNeutral: the RFC 8601 words
//	type Result struct {
//		Status                                 Status
//		Domain, Identifier, Selector, Algorithm string // header.d, header.i, header.s, header.a
//		BPrefix                                string // header.b: first 8 characters of b=
//		Err                                    error  // why not pass
//	}
//	func AuthResults(authservID string, results []Result) string
//	func HasAuthServID(value, authservID string) bool
//	// Summary: pass if any passes, else fail (policy counts), else
//	// temperror, else permerror; none when unsigned. For on_* actions.
//	func Summary(results []Result) Status
//
// DNS: NXDOMAIN or NODATA for the key is permerror ("no key"); any other
// failure (SERVFAIL, REFUSED, timeout, cancelled ctx) is temperror, never
// fail. A body hash or signature mismatch is fail; a bad tag list, an
// unusable or revoked key, rsa-sha1 or an expired signature is permerror.
//
// AuthResults gives the Authentication-Results value on one line, no line
// break: "mx.example.org; dkim=pass header.d=example.com header.s=sel
// header.a=rsa-sha256 header.b=abcdefgh", one "; dkim=..." per result (with
// reason="..." when not pass), "mx.example.org; dkim=none" for no results.
// Values from the message are quoted and stripped of control characters.
// HasAuthServID parses the authserv-id itself (comments, folding whitespace,
// quoted-string; case-insensitive) where go-msgauth's authres.Parse fails.
//
// # Milter flow
//
//	// end of headers, with fields collected from the header callbacks:
//	author, err := dkim.Author(fields)
//	keys := kr.Lookup(author) // err != nil: keys = nil
//	if originating && len(keys) > 0 { s, err = dkim.NewSigner(keys, fields, signOpts) }
//	else { v, err = dkim.NewVerifier(ctx, fields, verifyOpts) }
//	// each body chunk: s.Write(chunk) or v.Write(chunk)
//	// end of message: sigs, err := s.Close() → insert each at index 0;
//	// or results, err := v.Close(); delete every A-R whose value
//	// HasAuthServID(value, id) (highest index first); insert
//	// dkim.AuthResults(id, results) at index 0.
//	// abort: s.Abort() / v.Abort()
//
// Signer and Verifier serve one message, from one goroutine.
//
// # Admin functions
//
//	type GenerateOptions struct {
//		Domain, Selector string
//		Dir              string // default "."
//		Type             string // "rsa" (default) or "ed25519"
//		Bits             int    // RSA: default 2048, at least MinRSABits
//	}
//	type GeneratedKey struct {
//		KeyPath     string // DIR/SELECTOR.private, PKCS#8 PEM, mode 0600
//		RecordPath  string // DIR/SELECTOR.txt, byte for byte opendkim-genkey's layout
//		Record      string // contents of SELECTOR.txt
//		TXT         string // the value to publish: "v=DKIM1; h=sha256; k=rsa; p=..."
//		KeyListLine string // "*@DOMAIN:DOMAIN:/abs/DIR/SELECTOR"
//	}
//	func GenerateKey(opts GenerateOptions) (*GeneratedKey, error) // never overwrites
//
//	// nil = "key OK". Otherwise a *TestKeyError.
//	func TestKey(ctx context.Context, res resolver.Resolver, domain, selector, keyfile string, opts LoadOptions) error
//	type TestKeyError struct{ Kind TestKeyFailure; Name, Msg string }
//	// Kinds: TestKeyNoRecord, TestKeyNXDomain, TestKeyTempDNS, TestKeySyntax,
//	// TestKeyRevoked, TestKeyType, TestKeyMismatch, TestKeyTesting (t=y),
//	// TestKeyTooShort, TestKeyPrivate (key file unusable).
//
//	// Whole messages, for `postgate dkim sign|verify`. SignMessage writes the
//	// signatures then the message (LF line breaks if the message has them);
//	// r is read twice if it is an io.ReadSeeker, else held in memory.
//	// ErrNoKey (wrapped): no key for the author.
//	func SignMessage(w io.Writer, r io.Reader, kr *Keyring, opts *SignOptions) ([]Signature, error)
//	func VerifyMessage(ctx context.Context, r io.Reader, opts *VerifyOptions) ([]Result, error)
//	// the CLI prints AuthResults(id, results) and each Result.
package dkim
