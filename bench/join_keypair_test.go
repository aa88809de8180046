package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"golang.org/x/crypto/ssh"
)

// BenchmarkJoinLogicBoundKeypair measures one runner's bound_keypair joins
// in process, one after the other as its join sequence requires: the
// challenge (a store write), its signature, and Authority.Join (challenge
// use, sequence advance, sign, replay and audit records).
func BenchmarkJoinLogicBoundKeypair(b *testing.B) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	resources := strings.Replace(botsYAML, "KUBE_CA", strconv.Quote(benchCAPEM(b)), 1) + `---
kind: join_token
version: v1
metadata: {name: runner}
spec:
  bot: deployer
  method: bound_keypair
  bound_keypair: {public_key: "` + pub + `"}
`
	e := authoritytest.Start(b, "bench", resources, "")
	keys, err := identity.NewKeys()
	if err != nil {
		b.Fatal(err)
	}
	outputs := []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}
	digest := identity.OutputKeysDigest(outputs)
	ctx := context.Background()
	var seq uint64
	for b.Loop() {
		c, err := e.Authority.JoinChallenge(ctx, &identity.ChallengeRequest{JoinToken: "runner"}, "bench")
		if err != nil {
			b.Fatal(err)
		}
		p := identity.KeypairProof{Nonce: c.Nonce, Sequence: seq, PublicKey: pub}
		sig, err := signer.Sign(rand.Reader, identity.KeypairSigned("runner", "bench", &p, digest))
		if err != nil {
			b.Fatal(err)
		}
		p.Signature = base64.StdEncoding.EncodeToString(ssh.Marshal(sig))
		proof, _ := json.Marshal(p)
		req := &identity.JoinRequest{JoinToken: "runner", Method: "bound_keypair", Proof: string(proof), TTLSeconds: 3600, Outputs: outputs}
		if _, err := e.Authority.Join(ctx, req, "bench"); err != nil {
			b.Fatal(err)
		}
		seq++
	}
}
