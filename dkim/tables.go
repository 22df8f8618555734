package dkim

import (
	"bufio"
	"crypto"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// maxLineLength bounds one line of a key table: anything longer is not a
// hand-written rule.
const maxLineLength = 64 << 10

// KeyListEntry is one line of a dkim-filter KeyList:
// "sender-pattern:signing-domain:keypath".
type KeyListEntry struct {
	Line     int
	Pattern  string // '*' matches zero or more characters
	Domain   string // lower-case
	KeyPath  string // as written
	Selector string // base name of KeyPath as written
}

// KeyTableEntry is one line of an OpenDKIM KeyTable:
// "name domain:selector:keypath".
type KeyTableEntry struct {
	Line     int
	Name     string
	Domain   string // lower-case, or "%": the author's domain
	Selector string
	KeyPath  string
}

// SigningTableEntry is one line of an OpenDKIM SigningTable:
// "pattern keyname [identity]".
type SigningTableEntry struct {
	Line     int
	Pattern  string // a '*' wildcard pattern in a refile, else a lookup key
	KeyName  string // a KeyTable name, or "%": the author's domain
	Identity string // optional i= value; "%" stands for the author's domain
}

// lines calls fn for each non-blank line of r with comments ('#' to the end
// of the line, as dkim-filter and OpenDKIM do) and surrounding whitespace
// removed, and collects fn's errors as "FILE:LINE: message".
func lines(r io.Reader, file string, fn func(n int, line string) error) error {
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLength)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := fn(n, line); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", file, n, err))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s:%d: %w", file, n+1, err))
	}
	return errors.Join(errs...)
}

// ParseKeyList parses a dkim-filter KeyList. file names r in errors. Every
// bad line is reported; the entries are only valid when err is nil.
func ParseKeyList(r io.Reader, file string) ([]KeyListEntry, error) {
	var out []KeyListEntry
	err := lines(r, file, func(n int, line string) error {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return errors.New("want sender-pattern:signing-domain:keypath")
		}
		pattern, domain, keyPath := strings.TrimSpace(parts[0]), strings.TrimSpace(parts[1]), strings.TrimSpace(parts[2])
		if err := checkPattern(pattern); err != nil {
			return err
		}
		if err := checkDomain(domain); err != nil {
			return err
		}
		if keyPath == "" {
			return errors.New("empty key path")
		}
		sel := path.Base(keyPath)
		if err := checkSelector(sel); err != nil {
			return fmt.Errorf("key path %q: the selector is its file name: %w", keyPath, err)
		}
		out = append(out, KeyListEntry{Line: n, Pattern: pattern, Domain: strings.ToLower(domain), KeyPath: keyPath, Selector: sel})
		return nil
	})
	return out, err
}

// ParseKeyTable parses an OpenDKIM KeyTable. Inline keys (a third value not
// starting with "/", "./" or "../") are refused: postgate reads key files only.
func ParseKeyTable(r io.Reader, file string) ([]KeyTableEntry, error) {
	var out []KeyTableEntry
	seen := map[string]int{}
	err := lines(r, file, func(n int, line string) error {
		name, value, ok := cutSpace(line)
		if !ok {
			return errors.New("want: name domain:selector:keypath")
		}
		parts := strings.SplitN(value, ":", 3)
		if len(parts) != 3 {
			return fmt.Errorf("key %q: want domain:selector:keypath", name)
		}
		domain, sel, keyPath := parts[0], parts[1], parts[2]
		if domain != "%" {
			if err := checkDomain(domain); err != nil {
				return fmt.Errorf("key %q: %w", name, err)
			}
		}
		if err := checkSelector(sel); err != nil {
			return fmt.Errorf("key %q: %w", name, err)
		}
		if !strings.HasPrefix(keyPath, "/") && !strings.HasPrefix(keyPath, "./") && !strings.HasPrefix(keyPath, "../") {
			return fmt.Errorf("key %q: %q is not a path (inline keys are not supported; a path starts with /, ./ or ../)", name, keyPath)
		}
		if prev, dup := seen[name]; dup {
			return fmt.Errorf("key %q already defined on line %d", name, prev)
		}
		seen[name] = n
		out = append(out, KeyTableEntry{Line: n, Name: name, Domain: strings.ToLower(domain), Selector: sel, KeyPath: keyPath})
		return nil
	})
	return out, err
}

// ParseSigningTable parses an OpenDKIM SigningTable. With refile the first
// field is a '*' wildcard pattern (OpenDKIM's "refile:" type), otherwise a
// lookup key (see LoadKeyTables for the lookup order).
func ParseSigningTable(r io.Reader, file string, refile bool) ([]SigningTableEntry, error) {
	var out []SigningTableEntry
	err := lines(r, file, func(n int, line string) error {
		pattern, value, ok := cutSpace(line)
		if !ok {
			return errors.New("want: pattern keyname [identity]")
		}
		keyName, identity, _ := cutSpace(value)
		if strings.ContainsAny(identity, " \t") {
			return fmt.Errorf("too many fields after %q", keyName)
		}
		if refile {
			if err := checkPattern(pattern); err != nil {
				return err
			}
		} else if strings.ContainsAny(pattern, "\x00") {
			return errors.New("NUL byte in key")
		}
		out = append(out, SigningTableEntry{Line: n, Pattern: pattern, KeyName: keyName, Identity: identity})
		return nil
	})
	return out, err
}

func cutSpace(s string) (before, after string, ok bool) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, "", false
	}
	return s[:i], strings.TrimLeft(s[i:], " \t"), true
}

func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty sender pattern")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("sender pattern %q contains a space or control character", p)
		}
	}
	return nil
}

// checkDomain accepts a DNS name: dot-separated labels of letters, digits,
// '-' and '_', each 1 to 63 bytes.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty signing domain")
	}
	if len(d) > 253 {
		return fmt.Errorf("signing domain %.20q... too long", d)
	}
	for _, label := range strings.Split(strings.TrimSuffix(d, "."), ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("signing domain %q: %w", d, err)
		}
	}
	return nil
}

// checkSelector accepts one or more dot-separated DNS labels (RFC 6376 §3.1).
func checkSelector(s string) error {
	if s == "" {
		return errors.New("empty selector")
	}
	for _, label := range strings.Split(s, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("selector %q: %w", s, err)
		}
	}
	return nil
}

func checkLabel(l string) error {
	if l == "" || len(l) > 63 {
		return errors.New("empty or over-long label")
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("invalid character %q", c)
		}
	}
	return nil
}

// matchPattern reports whether s matches p, where '*' matches zero or more
// bytes and everything else matches itself, ASCII case-insensitively. The
// greedy-with-backtrack-to-last-star walk is linear in practice and never
// exponential.
func matchPattern(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && lower(p[pi]) == lower(s[si]):
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Rule maps a sender pattern to a key.
type Rule struct {
	Pattern string // '*' matches zero or more characters, case-insensitively
	Key     *Key   // Key.Domain "%" signs as the author's domain
	// Identity is an optional i= value; "%" in it stands for the author's
	// domain. It is left out when it is not within the signing domain.
	Identity string
}

// Keyring decides which keys sign mail from a given author. It is immutable
// and safe for concurrent use; a reload builds a new one.
type Keyring struct {
	rules []Rule            // pattern rules, in file order
	exact map[string][]Rule // plain SigningTable: lookup key -> rules in file order
	n     int
}

// NewKeyring returns a Keyring of pattern rules tried in order.
func NewKeyring(rules []Rule) *Keyring {
	return &Keyring{rules: rules, n: len(rules)}
}

// Len returns the number of rules (0 for a nil Keyring).
func (kr *Keyring) Len() int {
	if kr == nil {
		return 0
	}
	return kr.n
}

// Lookup returns the keys to sign mail whose author (the From: address, see
// Author) is author, or nil. The first matching rule wins and fixes the
// signing domain; each later matching rule with the same signing domain and a
// key algorithm not chosen yet adds a signature (RSA + Ed25519 dual signing).
// The returned keys are shared: do not modify them.
func (kr *Keyring) Lookup(author string) []*Key {
	if kr == nil {
		return nil
	}
	at := strings.LastIndexByte(author, '@')
	if at < 0 {
		return nil
	}
	local, domain := author[:at], strings.ToLower(author[at+1:])
	author = local + "@" + domain

	var out []*Key
	var signDomain string
	used := map[string]bool{}
	consider := func(r Rule) {
		k := r.Key
		if k.Domain == "%" || strings.Contains(r.Identity, "%") {
			c := *k
			if c.Domain == "%" {
				c.Domain = domain
			}
			c.Identity = strings.ReplaceAll(r.Identity, "%", domain)
			k = &c
		} else if r.Identity != "" {
			c := *k
			c.Identity = r.Identity
			k = &c
		}
		if k.Identity != "" && !identityWithin(k.Identity, k.Domain) {
			c := *k
			c.Identity = ""
			k = &c
		}
		alg := keyType(k.Signer.Public())
		if out == nil {
			signDomain = k.Domain
		} else if k.Domain != signDomain || used[alg] {
			return
		}
		used[alg] = true
		out = append(out, k)
	}
	for _, r := range kr.rules {
		if matchPattern(r.Pattern, author) {
			consider(r)
		}
	}
	if kr.exact != nil {
		for _, key := range plainLookupKeys(local, domain) {
			for _, r := range kr.exact[key] {
				consider(r)
			}
		}
	}
	return out
}

// identityWithin reports whether the i= value id is in domain or below it,
// as RFC 6376 §3.5 requires.
func identityWithin(id, domain string) bool {
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return false
	}
	d := strings.ToLower(id[at+1:])
	return d == domain || strings.HasSuffix(d, "."+domain)
}

// plainLookupKeys lists the keys a plain (non-refile) SigningTable is
// searched with, in OpenDKIM's order: user@host, *@host (a postgate
// addition: what most admins write), host, user@.parent for each parent
// domain, .parent for each parent domain, user@*, and *.
func plainLookupKeys(local, domain string) []string {
	keys := []string{strings.ToLower(local) + "@" + domain, "*@" + domain, domain}
	var parents []string
	for d := domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		parents = append(parents, "."+d)
	}
	for _, p := range parents {
		keys = append(keys, strings.ToLower(local)+"@"+p)
	}
	keys = append(keys, parents...)
	return append(keys, strings.ToLower(local)+"@*", "*")
}

// keyCache loads each key file once per table load.
type keyCache struct {
	opts LoadOptions
	m    map[string]crypto.Signer
}

func (c *keyCache) load(p string) (crypto.Signer, error) {
	if s, ok := c.m[p]; ok {
		return s, nil
	}
	s, err := readKeyFile(p, c.opts)
	if err != nil {
		return nil, err
	}
	c.m[p] = s
	return s, nil
}

// LoadKeyList reads a dkim-filter KeyList and every key it names. The file
// opened for a rule is keypath, else keypath.pem, else keypath.private; the
// selector is the file name of keypath as written. Either every line and key
// is good, or the error lists every problem as "FILE:LINE: message".
func LoadKeyList(file string, opts LoadOptions) (*Keyring, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := ParseKeyList(f, file)
	if err != nil {
		return nil, err
	}
	cache := &keyCache{opts: opts, m: map[string]crypto.Signer{}}
	var rules []Rule
	var errs []error
	for _, e := range entries {
		var signer crypto.Signer
		var used string
		var lerr error
		for _, p := range []string{e.KeyPath, e.KeyPath + ".pem", e.KeyPath + ".private"} {
			signer, lerr = cache.load(p)
			used = p
			if !errors.Is(lerr, fs.ErrNotExist) {
				break
			}
		}
		if errors.Is(lerr, fs.ErrNotExist) {
			lerr = fmt.Errorf("key %s: no such file (nor .pem, nor .private)", e.KeyPath)
		}
		if lerr != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", file, e.Line, lerr))
			continue
		}
		rules = append(rules, Rule{Pattern: e.Pattern, Key: &Key{Domain: e.Domain, Selector: e.Selector, Path: used, Signer: signer}})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return NewKeyring(rules), nil
}

// LoadKeyTables reads an OpenDKIM SigningTable and KeyTable and every key
// the KeyTable names. Both names may carry OpenDKIM's type prefix:
// "refile:" makes the SigningTable a list of '*' wildcard patterns tried in
// order; "file:" or no prefix makes it a plain table searched, as OpenDKIM
// does, with user@host, *@host, host, user@.parent..., .parent..., user@*, *.
// Either everything is good, or the error lists every problem as
// "FILE:LINE: message".
func LoadKeyTables(signingTable, keyTable string, opts LoadOptions) (*Keyring, error) {
	refile := false
	switch {
	case strings.HasPrefix(signingTable, "refile:"):
		refile = true
		signingTable = strings.TrimPrefix(signingTable, "refile:")
	case strings.HasPrefix(signingTable, "file:"):
		signingTable = strings.TrimPrefix(signingTable, "file:")
	}
	keyTable = strings.TrimPrefix(strings.TrimPrefix(keyTable, "file:"), "refile:")

	kf, err := os.Open(keyTable)
	if err != nil {
		return nil, err
	}
	defer kf.Close()
	sf, err := os.Open(signingTable)
	if err != nil {
		return nil, err
	}
	defer sf.Close()

	kentries, kerr := ParseKeyTable(kf, keyTable)
	sentries, serr := ParseSigningTable(sf, signingTable, refile)
	if err := errors.Join(kerr, serr); err != nil {
		return nil, err
	}

	cache := &keyCache{opts: opts, m: map[string]crypto.Signer{}}
	var errs []error
	keys := map[string]*Key{}
	for _, e := range kentries {
		signer, err := cache.load(e.KeyPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", keyTable, e.Line, err))
			continue
		}
		keys[e.Name] = &Key{Domain: e.Domain, Selector: e.Selector, Path: e.KeyPath, Signer: signer}
	}
	kr := &Keyring{}
	if !refile {
		kr.exact = map[string][]Rule{}
	}
	for _, e := range sentries {
		k, ok := keys[e.KeyName]
		if !ok {
			if !keyDefined(kentries, e.KeyName) {
				errs = append(errs, fmt.Errorf("%s:%d: key name %q is not in %s", signingTable, e.Line, e.KeyName, keyTable))
			}
			continue
		}
		r := Rule{Pattern: e.Pattern, Key: k, Identity: e.Identity}
		if refile {
			kr.rules = append(kr.rules, r)
		} else {
			lk := strings.ToLower(e.Pattern)
			kr.exact[lk] = append(kr.exact[lk], r)
		}
		kr.n++
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return kr, nil
}

func keyDefined(entries []KeyTableEntry, name string) bool {
	for _, e := range entries {
		if e.Name == name {
			return true
		}
	}
	return false
}
