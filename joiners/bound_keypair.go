package joiners

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// BoundKeypairMethod joins with a private key the join token is bound to.
const BoundKeypairMethod = "bound_keypair"

// Environment of a bound_keypair join.
const (
	// KeypairPathEnv is the path of the runner's private key.
	KeypairPathEnv = "MBOT_KEYPAIR_PATH"
	// RegistrationSecretEnv holds the one-time secret that binds the
	// runner's first key, as printed by mbot tokens add --method bound_keypair.
	RegistrationSecretEnv = "MBOT_REGISTRATION_SECRET"
)

// boundKeypair proves possession of the runner's private key by signing a
// challenge of the authority, for self-hosted runners with no platform
// identity. It is never detected: the runner asks for it with
// --join-method bound_keypair. Its proof signs the join's output keys, so
// the client builds it with OpenKeypair instead of Proof.
type boundKeypair struct{}

func init() { register(boundKeypair{}, 0) }

func (boundKeypair) Method() string { return BoundKeypairMethod }

func (boundKeypair) Signals() string { return KeypairPathEnv + ", " + RegistrationSecretEnv }

func (boundKeypair) Detect(Env) bool { return false }

func (boundKeypair) Proof(context.Context, Env, string) (string, error) {
	return "", errors.New("a bound_keypair proof signs the authority's challenge and the join's keys; mbot issue builds it with OpenKeypair")
}

// Files beside the private key at path: its public half (for the admin to
// bind), the join sequence, and a key being rotated to.
func pubPath(path string) string   { return path + ".pub" }
func statePath(path string) string { return path + ".state" }
func nextPath(path string) string  { return path + ".next" }

// keypairState is <keypair>.state: the sequence the next join presents,
// and the key it belongs to.
type keypairState struct {
	PublicKey string `json:"public_key"` // SHA256 fingerprint
	Sequence  uint64 `json:"sequence"`
}

// Keypair is the runner's bound key for one join: it signs the proof and
// then records the join's outcome beside the key.
type Keypair struct {
	path     string
	signer   ssh.Signer
	sequence uint64
	secret   string
	// next is the key rotated to, written to path.next until the join's
	// outcome is known.
	next ssh.Signer
	// Generated is set when the key was created by this run (registration).
	Generated bool
}

// OpenKeypair reads the runner's key at path (an OpenSSH or PKCS#8 PEM
// private key) and its join sequence. With a registration secret in env
// and no key at path, it generates one (Ed25519, 0600 in a 0700
// directory). With rotate it also generates the key to rotate to.
func OpenKeypair(path string, env Env, rotate bool) (*Keypair, error) {
	if path == "" {
		return nil, errors.New("a bound_keypair join needs the path of the runner's private key: set --keypair-path (" + KeypairPathEnv + ")")
	}
	k := &Keypair{path: path, secret: strings.TrimSpace(env(RegistrationSecretEnv))}
	if err := finishRotation(path); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(nextPath(path)); err == nil {
		return nil, fmt.Errorf("%s is left from a key rotation whose outcome is unknown: if the authority admitted it (mbot audit shows rotated_to with that key's fingerprint), "+
			"run mv %s %s; otherwise delete %s", nextPath(path), nextPath(path), path, nextPath(path))
	}
	signer, err := readPrivateKey(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && k.secret != "":
		if signer, err = k.generate(); err != nil {
			return nil, err
		}
		k.Generated = true
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("there is no private key at %s: put the key whose public half the admin bound to the join token there "+
			"(ssh-keygen -t ed25519 -N '' -f %s, then the admin runs mbot tokens add --method bound_keypair --public-key %s), "+
			"or set %s to a registration secret and mbot generates it", path, path, pubPath(path), RegistrationSecretEnv)
	case err != nil:
		return nil, err
	}
	k.signer = signer
	st, err := readState(path)
	if err != nil {
		return nil, err
	}
	// A state of another key (the admin bound a new one) starts over: the
	// authority starts the sequence over with a new binding too.
	if st.PublicKey == ssh.FingerprintSHA256(signer.PublicKey()) {
		k.sequence = st.Sequence
	}
	if rotate {
		var priv ed25519.PrivateKey
		if k.next, priv, err = newEd25519Signer(); err != nil {
			return nil, err
		}
		if err := writePrivateKey(nextPath(path), priv); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// PublicKey is the fingerprint of the key joins are signed with.
func (k *Keypair) PublicKey() string { return ssh.FingerprintSHA256(k.signer.PublicKey()) }

// Sequence is the join sequence this join presents.
func (k *Keypair) Sequence() uint64 { return k.sequence }

// Proof signs the challenge nonce for a join with joinToken to an
// authority of audience that certifies the output keys of outputKeys
// (identity.OutputKeysDigest).
func (k *Keypair) Proof(joinToken, audience, nonce, outputKeys string) (string, error) {
	p := identity.KeypairProof{Nonce: nonce, Sequence: k.sequence, PublicKey: authorizedKey(k.signer.PublicKey()), RegistrationSecret: k.secret}
	if k.next != nil {
		p.NewPublicKey = authorizedKey(k.next.PublicKey())
	}
	data := identity.KeypairSigned(joinToken, audience, &p, outputKeys)
	var err error
	if p.Signature, err = sign(k.signer, data); err != nil {
		return "", err
	}
	if k.next != nil {
		if p.NewSignature, err = sign(k.next, data); err != nil {
			return "", err
		}
	}
	b, err := json.Marshal(p)
	return string(b), err
}

// Admitted records an admitted join: the next sequence, and the rotated
// key in place of the old one. The state is written before the key moves,
// so that an interruption between the two is finished by OpenKeypair.
func (k *Keypair) Admitted() error {
	signer := k.signer
	if k.next != nil {
		signer = k.next
	}
	if err := writeState(k.path, keypairState{PublicKey: ssh.FingerprintSHA256(signer.PublicKey()), Sequence: k.sequence + 1}); err != nil {
		return err
	}
	if k.next != nil {
		if err := os.Rename(nextPath(k.path), k.path); err != nil {
			return fmt.Errorf("moving the rotated key into place: %w", err)
		}
		if err := writePublicKey(k.path, k.next); err != nil {
			return err
		}
	}
	return nil
}

// Refused undoes what this join prepared: a key to rotate to is deleted.
func (k *Keypair) Refused() error {
	if k.next != nil {
		return os.Remove(nextPath(k.path))
	}
	return nil
}

// Unknown records a join whose answer was lost: the authority may have
// admitted it, so the sequence moves on (the authority accepts a sequence ahead of its own);
// a key rotated to stays in path.next for the person to decide.
func (k *Keypair) Unknown() error {
	if k.next != nil {
		return nil
	}
	return writeState(k.path, keypairState{PublicKey: k.PublicKey(), Sequence: k.sequence + 1})
}

// finishRotation moves a rotated key into place if Admitted recorded the
// join that rotated to it but was interrupted before moving it.
func finishRotation(path string) error {
	next, err := readPrivateKey(nextPath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := readState(path)
	if err != nil || st.PublicKey != ssh.FingerprintSHA256(next.PublicKey()) {
		return err
	}
	if err := os.Rename(nextPath(path), path); err != nil {
		return err
	}
	return writePublicKey(path, next)
}

// generate creates the runner's first key at k.path for a registration.
func (k *Keypair) generate() (ssh.Signer, error) {
	signer, priv, err := newEd25519Signer()
	if err != nil {
		return nil, err
	}
	if err := writePrivateKey(k.path, priv); err != nil {
		return nil, err
	}
	return signer, writePublicKey(k.path, signer)
}

func newEd25519Signer() (ssh.Signer, ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	return signer, priv, err
}

// readPrivateKey reads the key at path, refusing one that others can read,
// as OpenSSH does.
func readPrivateKey(path string) (ssh.Signer, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the private key %s is not a regular file (a symbolic link?); give the path of the key file itself", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the private key %s is readable by others (mode %04o); chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := ssh.ParseRawPrivateKey(raw)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("the private key %s is encrypted; a runner's key has no passphrase (ssh-keygen -N '')", path)
	}
	if err != nil {
		return nil, fmt.Errorf("the private key %s is not an OpenSSH or PKCS#8 PEM private key", path)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("the private key %s: %w", path, err)
	}
	switch signer.PublicKey().Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return signer, nil
	}
	return nil, fmt.Errorf("the private key %s is of type %s; use an Ed25519 or ECDSA key", path, signer.PublicKey().Type())
}

func readState(path string) (keypairState, error) {
	var st keypairState
	raw, err := os.ReadFile(statePath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("%s is not a join sequence file written by mbot; restore it, or have an admin bind the key again (mbot tokens add --method bound_keypair --rotate)", statePath(path))
	}
	return st, nil
}

func writeState(path string, st keypairState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFile(statePath(path), append(b, '\n'), 0o600)
}

func writePrivateKey(path string, priv ed25519.PrivateKey) error {
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	return writeFile(path, pem.EncodeToMemory(block), 0o600)
}

func writePublicKey(path string, signer ssh.Signer) error {
	return writeFile(pubPath(path), ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644)
}

// writeFile replaces path atomically with data, creating its directory
// 0700 if it is missing.
func writeFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func sign(s ssh.Signer, data []byte) (string, error) {
	sig, err := s.Sign(rand.Reader, data)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(ssh.Marshal(sig)), nil
}
