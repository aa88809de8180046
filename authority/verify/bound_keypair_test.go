package verify_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// keypairEnv is a verification environment with a real store for the
// challenges and join sequences, and a clock the test moves.
func keypairEnv(t *testing.T) (*verify.Env, *time.Time) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := time.Now()
	key := make([]byte, 32)
	rand.Read(key)
	return &verify.Env{Audience: "acme", Keypairs: st, Now: func() time.Time { return clock },
		ChallengeKey: key}, &clock
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authorized(s ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

const outputKeys = "digest-of-the-output-keys"

// keypairJoin asks v for a challenge and answers it signed by signer (and
// by rotateTo, if set), presenting sequence.
type keypairJoin struct {
	signer, rotateTo ssh.Signer
	sequence         uint64
	secret           string
	// sign overrides the key that signs (a wrong key presenting signer's public half).
	sign ssh.Signer
}

func (j keypairJoin) proof(t *testing.T, v verify.Verifier) string {
	t.Helper()
	c, err := v.(verify.Challenger).Challenge(context.Background())
	if err != nil {
		t.Fatalf("Challenge: %v", err)
	}
	return j.answer(t, c.Nonce)
}

func (j keypairJoin) answer(t *testing.T, nonce string) string {
	t.Helper()
	p := identity.KeypairProof{Nonce: nonce, Sequence: j.sequence, PublicKey: authorized(j.signer), RegistrationSecret: j.secret}
	if j.rotateTo != nil {
		p.NewPublicKey = authorized(j.rotateTo)
	}
	data := identity.KeypairSigned(tokenName, "acme", &p, outputKeys)
	by := j.signer
	if j.sign != nil {
		by = j.sign
	}
	p.Signature = sshSign(t, by, data)
	if j.rotateTo != nil {
		p.NewSignature = sshSign(t, j.rotateTo, data)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sshSign(t *testing.T, s ssh.Signer, data []byte) string {
	t.Helper()
	sig, err := s.Sign(rand.Reader, data)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(ssh.Marshal(sig))
}

// join verifies proof and, when admitted, commits the sequence as the join
// path does after signing.
func join(v verify.Verifier, proof, remote string) (*verify.Admission, error) {
	return joinWith(v, proof, verify.JoinContext{OutputKeys: outputKeys, Retry: "request " + outputKeys, Remote: remote})
}

// joinWith is join with the request's context as given.
func joinWith(v verify.Verifier, proof string, jc verify.JoinContext) (*verify.Admission, error) {
	adm, err := v.(verify.RequestVerifier).VerifyJoin(context.Background(), proof, jc)
	if err != nil {
		return nil, err
	}
	if adm.Advance != nil {
		if err := adm.Advance(context.Background()); err != nil {
			return nil, err
		}
	}
	return adm, nil
}

func TestBoundKeypairJoin(t *testing.T) {
	env, clock := keypairEnv(t)
	runner := newSigner(t)
	v := mustCompile(t, "bound_keypair", "public_key: "+authorized(runner)+"\n", env)

	adm, err := join(v, keypairJoin{signer: runner}.proof(t, v), "192.0.2.1:1000")
	if err != nil {
		t.Fatalf("first join with the bound key: %v", err)
	}
	if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
		t.Errorf("the join token's own rule does not admit its claims: %s", why)
	}
	if got := adm.Claims["public_key"]; len(got) != 1 || got[0] != ssh.FingerprintSHA256(runner.PublicKey()) {
		t.Errorf("claims name key %v, want its fingerprint", got)
	}
	if _, err := join(v, keypairJoin{signer: runner, sequence: 1}.proof(t, v), "192.0.2.1:1001"); err != nil {
		t.Fatalf("second join at sequence 1: %v", err)
	}

	t.Run("wrong key", func(t *testing.T) {
		_, err := join(v, keypairJoin{signer: newSigner(t), sequence: 2}.proof(t, v), "192.0.2.9:1")
		wantRefusal(t, err, identity.CodeKeypairMismatch, "bound to key", "another key")
	})
	t.Run("bad signature", func(t *testing.T) {
		// The bound public key, but signed by another private key.
		_, err := join(v, keypairJoin{signer: runner, sign: newSigner(t), sequence: 2}.proof(t, v), "192.0.2.9:2")
		wantRefusal(t, err, identity.CodeKeypairMismatch, "does not verify")
	})
	t.Run("signature over another request", func(t *testing.T) {
		proof := keypairJoin{signer: runner, sequence: 2}.proof(t, v)
		_, err := v.(verify.RequestVerifier).VerifyJoin(context.Background(), proof, verify.JoinContext{OutputKeys: "other keys", Remote: "192.0.2.9:3"})
		wantRefusal(t, err, identity.CodeKeypairMismatch, "does not verify")
	})
	t.Run("reused challenge", func(t *testing.T) {
		c, err := v.(verify.Challenger).Challenge(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		proof := keypairJoin{signer: runner, sequence: 2}.answer(t, c.Nonce)
		if _, err := join(v, proof, "192.0.2.1:1002"); err != nil {
			t.Fatalf("join at sequence 2: %v", err)
		}
		_, err = join(v, keypairJoin{signer: runner, sequence: 3}.answer(t, c.Nonce), "192.0.2.1:1003")
		wantRefusal(t, err, identity.CodeProofReplayed, "already answered")
	})
	t.Run("expired challenge", func(t *testing.T) {
		c, err := v.(verify.Challenger).Challenge(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		*clock = clock.Add(verify.ChallengeTTL + time.Second)
		_, err = join(v, keypairJoin{signer: runner, sequence: 3}.answer(t, c.Nonce), "192.0.2.1:1004")
		wantRefusal(t, err, identity.CodeProofExpired, "expired")
	})
	t.Run("unknown challenge", func(t *testing.T) {
		_, err := join(v, keypairJoin{signer: runner, sequence: 3}.answer(t, "00ff"), "192.0.2.1:1005")
		wantRefusal(t, err, identity.CodeProofInvalid, "no such challenge")
	})
	t.Run("a stranger's answer uses up nothing", func(t *testing.T) {
		c, err := v.(verify.Challenger).Challenge(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = join(v, keypairJoin{signer: newSigner(t), sequence: 3}.answer(t, c.Nonce), "192.0.2.9:4")
		wantRefusal(t, err, identity.CodeKeypairMismatch, "another key")
		if _, err := join(v, keypairJoin{signer: runner, sequence: 3}.answer(t, c.Nonce), "192.0.2.1:1007"); err != nil {
			t.Fatalf("the runner answering the challenge a stranger answered first: %v", err)
		}
	})
	t.Run("forged challenges", func(t *testing.T) {
		c, err := v.(verify.Challenger).Challenge(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// A later expiry with the MAC of the issued one.
		later := []byte(c.Nonce)
		later[15] = "0123456789abcdef"[(strings.IndexByte("0123456789abcdef", later[15])+1)%16]
		_, err = join(v, keypairJoin{signer: runner, sequence: 4}.answer(t, string(later)), "192.0.2.1:1008")
		wantRefusal(t, err, identity.CodeProofInvalid, "no such challenge")
		// A challenge of another authority (another key).
		otherEnv, _ := keypairEnv(t)
		other := mustCompile(t, "bound_keypair", "public_key: "+authorized(runner)+"\n", otherEnv)
		oc, err := other.(verify.Challenger).Challenge(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = join(v, keypairJoin{signer: runner, sequence: 4}.answer(t, oc.Nonce), "192.0.2.1:1009")
		wantRefusal(t, err, identity.CodeProofInvalid, "no such challenge")
		// A challenge of the same join token bound to another key (before
		// an admin bound this one).
		rebound := mustCompile(t, "bound_keypair", "public_key: "+authorized(newSigner(t))+"\n", env)
		rc, err := rebound.(verify.Challenger).Challenge(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = join(v, keypairJoin{signer: runner, sequence: 4}.answer(t, rc.Nonce), "192.0.2.1:1010")
		wantRefusal(t, err, identity.CodeProofInvalid, "no such challenge")
		if _, err := join(v, keypairJoin{signer: runner, sequence: 4}.answer(t, c.Nonce), "192.0.2.1:1011"); err != nil {
			t.Fatalf("the issued challenge after the forged ones: %v", err)
		}
	})
	t.Run("not a proof", func(t *testing.T) {
		_, err := join(v, "a token secret", "192.0.2.1:1006")
		wantRefusal(t, err, identity.CodeProofInvalid, "not a bound_keypair proof")
	})
}

func TestBoundKeypairRotation(t *testing.T) {
	env, _ := keypairEnv(t)
	oldKey, newKey := newSigner(t), newSigner(t)
	v := mustCompile(t, "bound_keypair", "public_key: "+authorized(oldKey)+"\n", env)
	if _, err := join(v, keypairJoin{signer: oldKey}.proof(t, v), "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}

	// A rotation signed by a key other than the bound one is refused, and
	// so is one the new key did not sign.
	stranger := newSigner(t)
	_, err := join(v, keypairJoin{signer: stranger, rotateTo: newKey, sequence: 1}.proof(t, v), "192.0.2.9:1")
	wantRefusal(t, err, identity.CodeKeypairMismatch, "another key")
	p := keypairJoin{signer: oldKey, rotateTo: newKey, sequence: 1}.proof(t, v)
	var forged identity.KeypairProof
	if err := json.Unmarshal([]byte(p), &forged); err != nil {
		t.Fatal(err)
	}
	forged.NewSignature = forged.Signature // signed by the old key only
	b, _ := json.Marshal(forged)
	_, err = join(v, string(b), "192.0.2.9:2")
	wantRefusal(t, err, identity.CodeKeypairMismatch, "not signed by that key")

	adm, err := join(v, keypairJoin{signer: oldKey, rotateTo: newKey, sequence: 1}.proof(t, v), "192.0.2.1:2")
	if err != nil {
		t.Fatalf("rotation signed by the bound key: %v", err)
	}
	if got := adm.Claims["rotated_to"]; len(got) != 1 || got[0] != ssh.FingerprintSHA256(newKey.PublicKey()) {
		t.Errorf("claims rotated_to %v, want the new key's fingerprint", got)
	}
	_, err = join(v, keypairJoin{signer: oldKey, sequence: 2}.proof(t, v), "192.0.2.1:3")
	wantRefusal(t, err, identity.CodeKeypairMismatch, "another key")
	if _, err := join(v, keypairJoin{signer: newKey, sequence: 2}.proof(t, v), "192.0.2.1:4"); err != nil {
		t.Fatalf("join with the rotated key: %v", err)
	}

	// The admin binds another key: the sequence starts over with it.
	adminKey := newSigner(t)
	v2 := mustCompile(t, "bound_keypair", "public_key: "+authorized(adminKey)+"\n", env)
	_, err = join(v2, keypairJoin{signer: newKey, sequence: 3}.proof(t, v2), "192.0.2.1:5")
	wantRefusal(t, err, identity.CodeKeypairMismatch, "another key")
	if _, err := join(v2, keypairJoin{signer: adminKey}.proof(t, v2), "192.0.2.1:6"); err != nil {
		t.Fatalf("join with the key the admin bound: %v", err)
	}
}

func TestBoundKeypairCopiedKeyLocks(t *testing.T) {
	env, _ := keypairEnv(t)
	runner := newSigner(t)
	v := mustCompile(t, "bound_keypair", "public_key: "+authorized(runner)+"\n", env)
	for seq := range uint64(3) {
		if _, err := join(v, keypairJoin{signer: runner, sequence: seq}.proof(t, v), "192.0.2.1:1"); err != nil {
			t.Fatalf("join %d: %v", seq, err)
		}
	}
	// The copy was taken at sequence 1.
	_, err := join(v, keypairJoin{signer: runner, sequence: 1}.proof(t, v), "198.51.100.7:2")
	wantRefusal(t, err, identity.CodeJoinTokenLocked, "198.51.100.7:2", "192.0.2.1:1", "two holders", "mbot tokens add")
	// Now the original is refused too.
	_, err = join(v, keypairJoin{signer: runner, sequence: 3}.proof(t, v), "192.0.2.1:1")
	wantRefusal(t, err, identity.CodeJoinTokenLocked, "is locked")

	// A stale sequence under a signature that does not verify locks nothing.
	env2, _ := keypairEnv(t)
	v2 := mustCompile(t, "bound_keypair", "public_key: "+authorized(runner)+"\n", env2)
	for seq := range uint64(2) {
		if _, err := join(v2, keypairJoin{signer: runner, sequence: seq}.proof(t, v2), "192.0.2.1:1"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = join(v2, keypairJoin{signer: runner, sign: newSigner(t), sequence: 0}.proof(t, v2), "198.51.100.7:2")
	wantRefusal(t, err, identity.CodeKeypairMismatch)
	if _, err := join(v2, keypairJoin{signer: runner, sequence: 2}.proof(t, v2), "192.0.2.1:1"); err != nil {
		t.Fatalf("an unsigned stale sequence locked the join token: %v", err)
	}
}

// TestBoundKeypairRetryIsTheSameRequest: the previous sequence is admitted
// again only for exactly the request it was admitted for (the same Retry
// digest), and only when that request may be retried at all (a non-empty
// digest: every output carries a key). A copy of the key and its .state
// asking for keyless outputs (a JWT-SVID) or for anything else locks the
// join token.
func TestBoundKeypairRetryIsTheSameRequest(t *testing.T) {
	for _, tc := range []struct {
		name, first, again string
		admitted           bool
	}{
		{"the same request with keys", "request A", "request A", true},
		{"another request", "request A", "request B", false},
		{"a keyless request, the same", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := keypairEnv(t)
			runner := newSigner(t)
			v := mustCompile(t, "bound_keypair", "public_key: "+authorized(runner)+"\n", env)
			if _, err := joinWith(v, keypairJoin{signer: runner}.proof(t, v), verify.JoinContext{OutputKeys: outputKeys, Retry: tc.first, Remote: "192.0.2.1:1"}); err != nil {
				t.Fatal(err)
			}
			_, err := joinWith(v, keypairJoin{signer: runner}.proof(t, v), verify.JoinContext{OutputKeys: outputKeys, Retry: tc.again, Remote: "198.51.100.7:2"})
			if tc.admitted {
				if err != nil {
					t.Fatalf("the retry of the same request: %v", err)
				}
				return
			}
			wantRefusal(t, err, identity.CodeJoinTokenLocked, "two holders")
			_, err = join(v, keypairJoin{signer: runner, sequence: 1}.proof(t, v), "192.0.2.1:1")
			wantRefusal(t, err, identity.CodeJoinTokenLocked, "is locked")
		})
	}
}

func TestBoundKeypairRegistration(t *testing.T) {
	env, clock := keypairEnv(t)
	secret := "5f3c2a1e0d9b8a7f6e5d4c3b2a190807"
	section := "registration_secret_hash: " + verify.HashTokenSecret(secret) + "\nregistration_expires: " +
		clock.Add(time.Hour).UTC().Format(time.RFC3339) + "\n"
	v := mustCompile(t, "bound_keypair", section, env)
	runner := newSigner(t)

	_, err := join(v, keypairJoin{signer: runner}.proof(t, v), "192.0.2.1:1")
	wantRefusal(t, err, identity.CodeProofInvalid, "MBOT_REGISTRATION_SECRET")
	_, err = join(v, keypairJoin{signer: runner, secret: "not the secret"}.proof(t, v), "192.0.2.1:1")
	wantRefusal(t, err, identity.CodeProofInvalid, "does not match")
	adm, err := join(v, keypairJoin{signer: runner, secret: secret}.proof(t, v), "192.0.2.1:1")
	if err != nil {
		t.Fatalf("registration: %v", err)
	}
	if strings.Contains(adm.Claims.String(), secret) || strings.Contains(adm.ProofID, secret) {
		t.Errorf("the admission carries the secret: %+v", adm)
	}
	// The secret is spent: another key presenting it is not the bound one.
	_, err = join(v, keypairJoin{signer: newSigner(t), secret: secret, sequence: 1}.proof(t, v), "198.51.100.7:1")
	wantRefusal(t, err, identity.CodeKeypairMismatch, "another key")
	if _, err := join(v, keypairJoin{signer: runner, sequence: 1}.proof(t, v), "192.0.2.1:1"); err != nil {
		t.Fatalf("join with the registered key: %v", err)
	}

	// An expired secret registers nothing.
	env2, clock2 := keypairEnv(t)
	v2 := mustCompile(t, "bound_keypair", section, env2)
	*clock2 = clock2.Add(2 * time.Hour)
	_, err = join(v2, keypairJoin{signer: runner, secret: secret}.proof(t, v2), "192.0.2.1:1")
	wantRefusal(t, err, identity.CodeProofExpired, "expired")
}

func TestBoundKeypairSection(t *testing.T) {
	env, _ := keypairEnv(t)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	mustCompile(t, "bound_keypair", "public_key: |\n  "+strings.ReplaceAll(pemKey, "\n", "\n  ")+"\n", env)

	for _, tc := range []struct{ section, want string }{
		{"public_key: ssh-ed25519 notbase64\n", "line 8: spec.bound_keypair.public_key: not an OpenSSH public key"},
		{"public_key: " + authorized(newSigner(t)) + "\nregistration_secret_hash: " + verify.HashTokenSecret("x") + "\n", "not both"},
		{"registration_secret_hash: plain-secret\nregistration_expires: 2030-01-01T00:00:00Z\n", "64 hex digits"},
		{"registration_secret_hash: " + verify.HashTokenSecret("x") + "\n", "registration_expires must be an RFC 3339 time"},
		{"allow: []\n", "not a known field"},
		{"{}\n", "needs public_key"},
	} {
		_, err := compile(t, "bound_keypair", tc.section, env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("section %q: error %v, want one containing %q", tc.section, err, tc.want)
		}
	}
}

// TestBoundKeypairSequenceAhead: a runner that lost joins' answers counts
// them as admitted, so a sequence ahead is admitted; a number no runner
// reaches is refused without a lock.
func TestBoundKeypairSequenceAhead(t *testing.T) {
	env, _ := keypairEnv(t)
	runner := newSigner(t)
	v := mustCompile(t, "bound_keypair", "public_key: "+authorized(runner)+"\n", env)
	if _, err := join(v, keypairJoin{signer: runner}.proof(t, v), "192.0.2.1:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := join(v, keypairJoin{signer: runner, sequence: 2}.proof(t, v), "192.0.2.1:1"); err != nil {
		t.Fatalf("one ahead (a lost answer): %v", err)
	}
	if _, err := join(v, keypairJoin{signer: runner, sequence: 5}.proof(t, v), "192.0.2.1:1"); err != nil {
		t.Fatalf("two ahead (two lost answers): %v", err)
	}
	_, err := join(v, keypairJoin{signer: runner, sequence: 1 << 60}.proof(t, v), "192.0.2.1:1")
	wantRefusal(t, err, identity.CodeBadRequest, "beyond any join sequence")
	if _, err := join(v, keypairJoin{signer: runner, sequence: 6}.proof(t, v), "192.0.2.1:1"); err != nil {
		t.Fatalf("the current sequence after refusals: %v", err)
	}
	// What was skipped is behind now: a copy presenting it locks the token.
	_, err = join(v, keypairJoin{signer: runner, sequence: 4}.proof(t, v), "198.51.100.7:1")
	wantRefusal(t, err, identity.CodeJoinTokenLocked, "two holders")

	// A refused proof's key is recorded by fingerprint, marked unverified by the join path.
	stranger := newSigner(t)
	claims := v.(verify.UnverifiedClaimer).UnverifiedClaims(keypairJoin{signer: stranger, sequence: 4}.answer(t, "00"))
	if got := claims["public_key"]; len(got) != 1 || got[0] != ssh.FingerprintSHA256(stranger.PublicKey()) {
		t.Errorf("unverified claims %v, want the presented key's fingerprint", claims)
	}
	if strings.Contains(claims.String(), "AAAA") {
		t.Errorf("unverified claims carry the key itself: %v", claims)
	}
}
