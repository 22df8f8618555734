package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MinRSABits is the smallest RSA key accepted for signing (RFC 8301 §3.2:
// verifiers must not accept signatures made with shorter keys).
const MinRSABits = 1024

// LoadOptions tunes how key files are read.
type LoadOptions struct {
	// AllowGroupReadable accepts key files readable by group or others.
	// They are refused by default: a DKIM key signs for the whole domain.
	AllowGroupReadable bool
}

// Key is a private key ready to sign for one domain and selector.
type Key struct {
	Domain   string // d=, lower-case
	Selector string // s=
	Path     string // the file actually read
	Signer   crypto.Signer
	// Identity is the optional i= value (the AUID), within Domain.
	Identity string
}

// Algorithm returns the a= value this key signs with.
func (k *Key) Algorithm() string { return keyType(k.Signer.Public()) + "-sha256" }

// keyType returns the k= value of a public key ("rsa", "ed25519").
func keyType(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *rsa.PublicKey:
		return "rsa"
	case ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// LoadKey reads the private key in path for domain and selector, refusing a
// file that others may read (unless allowed) and RSA keys under MinRSABits.
// Errors name the file.
func LoadKey(path, domain, selector string, opts LoadOptions) (*Key, error) {
	signer, err := readKeyFile(path, opts)
	if err != nil {
		return nil, err
	}
	return &Key{Domain: strings.ToLower(domain), Selector: selector, Path: path, Signer: signer}, nil
}

func readKeyFile(path string, opts LoadOptions) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && !opts.AllowGroupReadable {
		return nil, fmt.Errorf("%s: private key is accessible by group or others (mode %04o): chmod 600 it, or set allow_group_readable_keys", path, perm)
	}
	// Key files are tiny; a cap keeps a wrong path (a log file, say) cheap.
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return signer, nil
}

// ParsePrivateKey decodes an RSA key (PEM, PKCS#1 "RSA PRIVATE KEY" or PKCS#8
// "PRIVATE KEY") or an Ed25519 key (PKCS#8 PEM, or dkimpy's raw base64 of the
// 32-byte seed). RSA keys under MinRSABits are refused.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return parseRawEd25519(data)
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted {
		return nil, errors.New("encrypted PEM keys are not supported")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted PEM keys are not supported")
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want RSA PRIVATE KEY or PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("bad %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is too short (minimum %d)", bits, MinRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", key)
}

// parseRawEd25519 reads dkimpy's Ed25519 key file: the base64 of the 32-byte
// seed (PyNaCl's SigningKey encoding), possibly followed by a newline.
func parseRawEd25519(data []byte) (crypto.Signer, error) {
	text := bytes.TrimSpace(data)
	if len(text) == 0 {
		return nil, errors.New("empty key file")
	}
	raw, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		return nil, errors.New("not a PEM key, nor a base64 Ed25519 seed")
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize: // seed followed by the public key
		k := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		if !bytes.Equal(k[ed25519.SeedSize:], raw[ed25519.SeedSize:]) {
			return nil, errors.New("raw Ed25519 key: public half does not match the seed")
		}
		return k, nil
	}
	return nil, fmt.Errorf("not a PEM key, nor a dkimpy Ed25519 key (base64 of %d bytes; a seed has %d)", len(raw), ed25519.SeedSize)
}

// publicKeyRecord returns the p= value for a public key: SubjectPublicKeyInfo
// for RSA (what opendkim-genkey publishes), the raw 32 bytes for Ed25519
// (RFC 8463 §4.2).
func publicKeyRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(k), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}
