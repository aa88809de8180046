package joiners_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/joiners"
	"golang.org/x/crypto/ssh"
)

func TestBoundKeypairNotDetected(t *testing.T) {
	if j, err := joiners.Detect(envOf(map[string]string{joiners.KeypairPathEnv: "/k", joiners.RegistrationSecretEnv: "s"})); err == nil {
		t.Errorf("Detect picked %s from the keypair variables", j.Method())
	}
	if _, err := joiners.ByMethod("bound_keypair"); err != nil {
		t.Errorf("ByMethod(bound_keypair): %v", err)
	}
}

// decodeProof reads a proof and checks its signature by its public key.
func decodeProof(t *testing.T, proof, token, nonce, outputs string) identity.KeypairProof {
	t.Helper()
	var p identity.KeypairProof
	if err := json.Unmarshal([]byte(proof), &p); err != nil {
		t.Fatal(err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(p.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifySig(key, identity.KeypairSigned(token, "acme", &p, outputs), p.Signature); err != nil {
		t.Errorf("the proof's signature does not verify by its key: %v", err)
	}
	if p.Nonce != nonce {
		t.Errorf("nonce %q, want %q", p.Nonce, nonce)
	}
	return p
}

func verifySig(key ssh.PublicKey, data []byte, b64 string) error {
	raw, err := decodeBase64(b64)
	if err != nil {
		return err
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(raw, &sig); err != nil {
		return err
	}
	return key.Verify(data, &sig)
}

func TestKeypairRegistrationAndRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "runner", "keys")
	path := filepath.Join(dir, "key")

	_, err := joiners.OpenKeypair(path, envOf(nil), false)
	if err == nil || !strings.Contains(err.Error(), "no private key at") || !strings.Contains(err.Error(), joiners.RegistrationSecretEnv) {
		t.Fatalf("OpenKeypair without a key or secret: %v", err)
	}
	secret := map[string]string{joiners.RegistrationSecretEnv: "the-secret"}
	kp, err := joiners.OpenKeypair(path, envOf(secret), false)
	if err != nil {
		t.Fatalf("OpenKeypair registering: %v", err)
	}
	if !kp.Generated || kp.Sequence() != 0 {
		t.Errorf("a registration: generated %v, sequence %d; want a generated key at 0", kp.Generated, kp.Sequence())
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %04o", p, err, want)
		}
	}
	proof, err := kp.Proof("runner-1", "acme", "n1", "outs")
	if err != nil {
		t.Fatal(err)
	}
	if p := decodeProof(t, proof, "runner-1", "n1", "outs"); p.RegistrationSecret != "the-secret" || p.Sequence != 0 {
		t.Errorf("registration proof %+v", p)
	}
	if err := kp.Admitted(); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(path)

	// The next join needs no secret, presents sequence 1, and rotates.
	kp, err = joiners.OpenKeypair(path, envOf(nil), true)
	if err != nil {
		t.Fatal(err)
	}
	if kp.Generated || kp.Sequence() != 1 {
		t.Errorf("second join: generated %v, sequence %d; want the key at 1", kp.Generated, kp.Sequence())
	}
	proof, err = kp.Proof("runner-1", "acme", "n2", "outs")
	if err != nil {
		t.Fatal(err)
	}
	p := decodeProof(t, proof, "runner-1", "n2", "outs")
	newKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(p.NewPublicKey))
	if err != nil {
		t.Fatalf("a rotation proof without a new key: %v", err)
	}
	if err := verifySig(newKey, identity.KeypairSigned("runner-1", "acme", &p, "outs"), p.NewSignature); err != nil {
		t.Errorf("the new key's signature does not verify: %v", err)
	}
	// A refused rotation leaves the key as it was.
	if err := kp.Refused(); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(path); string(now) != string(first) {
		t.Error("a refused rotation changed the key")
	}
	if _, err := os.Stat(path + ".next"); !os.IsNotExist(err) {
		t.Errorf("a refused rotation left %s.next: %v", path, err)
	}

	// An admitted one replaces it, and the state follows the new key.
	kp, err = joiners.OpenKeypair(path, envOf(nil), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Admitted(); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(path); string(now) == string(first) {
		t.Error("an admitted rotation did not replace the key")
	}
	kp, err = joiners.OpenKeypair(path, envOf(nil), false)
	if err != nil || kp.Sequence() != 2 {
		t.Fatalf("after the rotation: %v, sequence %d; want 2", err, kp.Sequence())
	}
	// A lost answer counts as admitted.
	if err := kp.Unknown(); err != nil {
		t.Fatal(err)
	}
	if kp, err = joiners.OpenKeypair(path, envOf(nil), false); err != nil || kp.Sequence() != 3 {
		t.Fatalf("after a lost answer: %v, sequence %d; want 3", err, kp.Sequence())
	}
}

func TestKeypairRefusesLooseKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if _, err := joiners.OpenKeypair(path, envOf(map[string]string{joiners.RegistrationSecretEnv: "s"}), false); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := joiners.OpenKeypair(path, envOf(nil), false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("OpenKeypair of a key others can read: %v", err)
	}
	if _, err := joiners.OpenKeypair("", envOf(nil), false); err == nil || !strings.Contains(err.Error(), "--keypair-path") {
		t.Errorf("OpenKeypair without a path: %v", err)
	}
}

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
