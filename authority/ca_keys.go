package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/store"
)

// CA private keys are encrypted at rest ("sealed") with a key-encryption key
// (KEK) that never enters the store, so that a copy of the database alone
// cannot mint certificates. The sealing happens here, above the store: every
// store engine holds the same sealed PEM and needs nothing of its own.
//
// A sealed key is one PEM block in place of the PRIVATE KEY block:
//
//	-----BEGIN MBOT SEALED PRIVATE KEY-----
//	Version: 1
//
//	base64(nonce || AES-256-GCM(PKCS #8 DER))
//	-----END MBOT SEALED PRIVATE KEY-----
//
// The CA certificate stays in the clear beside it. The additional data is
// sealedKeyAAD and the CA's name, so a sealed key moved to another CA's row
// does not open. The Version header lets a later format be told apart.

// EnvCAKEK holds the key-encryption key itself (64 hex digits or 32 bytes in
// base64), for platforms that hand secrets over in the environment.
const EnvCAKEK = "MBOT_CA_KEK"

const (
	pemSealedKey     = "MBOT SEALED PRIVATE KEY"
	pemPlainKey      = "PRIVATE KEY"
	sealedKeyVersion = "1"
	sealedKeyAAD     = "mbot sealed CA key v1\x00"
)

// KEK is the key-encryption key that seals CA private keys.
type KEK struct {
	aead cipher.AEAD
	// Source says where the key came from, for messages: a file path or $MBOT_CA_KEK.
	Source string
}

// CAKeyEncryption is authority.yaml's ca_key_encryption.
type CAKeyEncryption struct {
	// KeyFile holds the 32-byte key, as 64 hex digits or base64; it must be
	// readable by its owner only.
	KeyFile string `yaml:"key_file"`
}

// GenKEKCommand is the command that makes a key-encryption key, for messages.
const GenKEKCommand = "mbot authority gen-kek --out /etc/mbot/kek"

// LoadKEK reads the key-encryption key from ca_key_encryption.key_file or
// $MBOT_CA_KEK. Without either it is nil on SQLite (CA keys are then stored
// in the clear, and the start log and mbot lint say so), and an error on
// PostgreSQL: a database dump or backup must never be enough to mint
// certificates, and a shared database is dumped and backed up by others.
func LoadKEK(cfg *Config) (*KEK, error) {
	env, inEnv := os.LookupEnv(EnvCAKEK)
	file := cfg.CAKeyEncryption.KeyFile
	switch {
	case inEnv && file != "":
		return nil, fmt.Errorf("both ca_key_encryption.key_file (%s) and $%s are set; keep one, so there is no doubt which key seals the CA keys", file, EnvCAKEK)
	case inEnv:
		return parseKEK([]byte(env), "$"+EnvCAKEK)
	case file != "":
		return readKEKFile(file)
	case cfg.Storage.Type == "postgres":
		return nil, ErrPostgresWithoutKEK
	}
	return nil, nil
}

// ErrPostgresWithoutKEK refuses PostgreSQL storage without a key-encryption key.
var ErrPostgresWithoutKEK = fmt.Errorf("storage is postgres, but no CA key-encryption key is set: the CA private keys would sit in the database, "+
	"and a pg_dump or backup of it would be enough to mint certificates. Make a key with `%s`, "+
	"then set ca_key_encryption: {key_file: /etc/mbot/kek} in authority.yaml (or put the key itself in $%s) on every replica",
	GenKEKCommand, EnvCAKEK)

// GenerateKEK writes a new key-encryption key (32 random bytes, base64) to
// path, readable by its owner only. An existing file is never overwritten:
// it may be the key a store is sealed with.
func GenerateKEK(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists; it may be the key a store is sealed with, so it is left alone: give another --out", path)
	}
	if err != nil {
		return err
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// KeysAtRest says how the authority stores its CA private keys: "sealed"
// with a key-encryption key, or "clear".
func (a *Authority) KeysAtRest() string {
	if a.kek != nil {
		return "sealed"
	}
	return "clear"
}

// SealCAForCopy returns what migrate-store writes into PostgreSQL for a CA
// row of a SQLite store: its key sealed with kek (a key already sealed
// with kek is kept as it is; one that does not open with kek is refused).
func SealCAForCopy(kek *KEK) func(name string, material []byte) ([]byte, error) {
	return func(name string, material []byte) ([]byte, error) {
		ca := strings.TrimSuffix(name, ".next") // a rotation's next CA is sealed for its CA's name
		m, err := parseCAMaterial(ca, material, kek, true)
		if err != nil {
			return nil, err
		}
		if m.sealed {
			return material, nil
		}
		return m.encode(ca, kek), nil
	}
}

// readKEKFile reads a key file, refusing one others can read.
func readKEKFile(path string) (*KEK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA key-encryption key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the CA key-encryption key: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("the CA key-encryption key %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("the CA key-encryption key %s is open to its group or others (mode %04o); chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("reading the CA key-encryption key %s: %w", path, err)
	}
	return parseKEK(data, path)
}

// parseKEK decodes a 32-byte key written as 64 hex digits or as base64.
func parseKEK(text []byte, source string) (*KEK, error) {
	s := strings.TrimSpace(string(text))
	var key []byte
	if len(s) == 64 {
		key, _ = hex.DecodeString(s)
	}
	if key == nil {
		key, _ = base64.StdEncoding.DecodeString(s)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("the CA key-encryption key in %s is not 32 bytes written as 64 hex digits or base64; make one with: %s (or: openssl rand -base64 32)", source, GenKEKCommand)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &KEK{aead: aead, Source: source}, nil
}

// seal encrypts a PKCS #8 DER key of the CA name into a sealed PEM block.
func (k *KEK) seal(name string, der []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(der)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	sealed := k.aead.Seal(nonce, nonce, der, []byte(sealedKeyAAD+name))
	return pem.EncodeToMemory(&pem.Block{Type: pemSealedKey, Headers: map[string]string{"Version": sealedKeyVersion}, Bytes: sealed})
}

// open decrypts a sealed PEM block of the CA name into PKCS #8 DER.
func (k *KEK) open(name string, block *pem.Block) ([]byte, error) {
	if v := block.Headers["Version"]; v != sealedKeyVersion {
		return nil, fmt.Errorf("the %s CA key is sealed in format version %q, which this mbot does not know; run the mbot release that sealed it", name, v)
	}
	n := k.aead.NonceSize()
	if len(block.Bytes) < n+k.aead.Overhead() {
		return nil, fmt.Errorf("the %s CA's sealed key is truncated", name)
	}
	der, err := k.aead.Open(nil, block.Bytes[:n], block.Bytes[n:], []byte(sealedKeyAAD+name))
	if err != nil {
		return nil, fmt.Errorf("the %s CA key does not open with the key-encryption key from %s: that is not the key it was sealed with (or the stored key was altered); set ca_key_encryption.key_file or $%s to the key the store was sealed with",
			name, k.Source, EnvCAKEK)
	}
	return der, nil
}

// caMaterial is one stored CA: its certificate (X.509 CAs only) and key.
type caMaterial struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	der     []byte // the key's PKCS #8 DER
	sealed  bool
}

// errPlainKeyWithKEK is a CA key stored in the clear while ca_key_encryption is set.
var errPlainKeyWithKEK = errors.New("stored in the clear, but a key-encryption key is set (ca_key_encryption or $" + EnvCAKEK + ")")

// parseCAMaterial reads the PEM stored under a CA's name. name is the CA
// (ssh-user, tls, ...) the key was sealed for. A sealed key needs kek; a
// plain key with kek set is refused with errPlainKeyWithKEK (wrapped) unless
// allowPlain, so that a store is never half sealed without anyone knowing.
func parseCAMaterial(name string, material []byte, kek *KEK, allowPlain bool) (*caMaterial, error) {
	m := &caMaterial{}
	for rest := material; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("the %s CA certificate: %w", name, err)
			}
			m.cert, m.certPEM = cert, pem.EncodeToMemory(block)
		case pemPlainKey:
			if kek != nil && !allowPlain {
				return nil, fmt.Errorf("the %s CA key is %w: run `mbot authority migrate-keys --config authority.yaml` once to seal every CA key in place, then start again",
					name, errPlainKeyWithKEK)
			}
			m.der = block.Bytes
		case pemSealedKey:
			if kek == nil {
				return nil, fmt.Errorf("the %s CA key is encrypted at rest: set ca_key_encryption.key_file in authority.yaml (or $%s) to the key-encryption key it was sealed with",
					name, EnvCAKEK)
			}
			der, err := kek.open(name, block)
			if err != nil {
				return nil, err
			}
			m.der, m.sealed = der, true
		}
	}
	if m.der == nil {
		return nil, fmt.Errorf("the stored %s CA holds no private key", name)
	}
	key, err := x509.ParsePKCS8PrivateKey(m.der)
	if err != nil {
		return nil, fmt.Errorf("the %s CA key: %w", name, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the %s CA key is an unsupported %T", name, key)
	}
	m.key = signer
	return m, nil
}

// encode writes the material back as stored: the certificate, then the key
// sealed with kek, or in the clear when kek is nil.
func (m *caMaterial) encode(name string, kek *KEK) []byte {
	var b bytes.Buffer
	b.Write(m.certPEM)
	if kek != nil {
		b.Write(kek.seal(name, m.der))
	} else {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: pemPlainKey, Bytes: m.der}))
	}
	return b.Bytes()
}

// MigrateKeysRequest says what mbot authority migrate-keys does to every
// stored CA key. The key it opens them with is the configured one
// (ca_key_encryption.key_file or $MBOT_CA_KEK).
type MigrateKeysRequest struct {
	// NewKeyFile, if set, re-seals every key with the key in this file.
	NewKeyFile string
	// Unseal stores every key in the clear again.
	Unseal bool
	// Actor names who ran it, for the audit log.
	Actor string
}

// MigrateKeys seals every CA key in the store in place with the configured
// key-encryption key (or re-seals it with another, or unseals it), in one
// transaction, and scrubs the old form from the database file. Keys already
// in the wanted form are left alone, so running it twice changes nothing.
func MigrateKeys(ctx context.Context, cfg *Config, req MigrateKeysRequest) (string, error) {
	kek, err := LoadKEK(cfg)
	if err != nil {
		return "", err
	}
	target := kek
	switch {
	case req.NewKeyFile != "" && req.Unseal:
		return "", errors.New("--new-key-file and --unseal contradict each other; pass one")
	case req.NewKeyFile != "":
		if target, err = readKEKFile(req.NewKeyFile); err != nil {
			return "", err
		}
	case req.Unseal && cfg.Storage.Type == "postgres":
		return "", errors.New("--unseal would store the CA keys in the clear in PostgreSQL, where a pg_dump or backup would be enough to mint certificates; the authority does not start that way. Re-key with --new-key-file instead")
	case req.Unseal:
		target = nil
	case kek == nil:
		return "", fmt.Errorf("no key-encryption key to seal the CA keys with: set ca_key_encryption.key_file in %s (or $%s), then run this again",
			cfg.path, EnvCAKEK)
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer st.Close()
	rows, err := st.ListCAs(ctx)
	if err != nil {
		return "", err
	}
	var changes []store.CAChange
	for _, name := range slices.Sorted(maps.Keys(rows)) {
		ca := strings.TrimSuffix(name, ".next") // a rotation's next CA is sealed for its CA's name
		m, err := parseCAMaterial(ca, rows[name], kek, true)
		if err != nil && target != nil && target != kek {
			// Re-keyed by an earlier run that did not finish the job.
			if again, err2 := parseCAMaterial(ca, rows[name], target, true); err2 == nil && again.sealed {
				continue
			}
		}
		if err != nil {
			return "", err
		}
		if (target == nil && !m.sealed) || (target == kek && m.sealed) {
			continue // already as wanted
		}
		changes = append(changes, store.CAChange{Name: name, Old: rows[name], New: m.encode(ca, target)})
	}
	what := "stored in the clear"
	if target != nil {
		what = "sealed with the key from " + target.Source
	}
	if len(changes) == 0 {
		return fmt.Sprintf("every CA key (%d) is already %s; nothing to do\n", len(rows), what), nil
	}
	if err := st.ReplaceCAs(ctx, changes); err != nil {
		return "", fmt.Errorf("%w; nothing was changed, run migrate-keys again", err)
	}
	names := make([]string, len(changes))
	for i, c := range changes {
		names[i] = c.Name
	}
	if err := st.Audit(ctx, &store.AuditEvent{Event: "ca.keys", Allowed: true, Remote: req.Actor,
		Message: fmt.Sprintf("%d CA keys %s: %s", len(changes), what, strings.Join(names, ","))}); err != nil {
		return "", fmt.Errorf("the CA keys are %s, but recording it in the audit log failed: %w", what, err)
	}
	out := fmt.Sprintf("%d CA keys %s: %s\n", len(changes), what, strings.Join(names, ", "))
	if req.NewKeyFile != "" {
		out += fmt.Sprintf("Now point ca_key_encryption.key_file (or $%s) at %s and restart every authority.\n", EnvCAKEK, req.NewKeyFile)
	}
	return out, nil
}
