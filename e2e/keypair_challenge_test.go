package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// keypairWire speaks the bound_keypair join over raw HTTPS, as an attacker
// or another client would: it asks an authority (url) for challenges and
// answers them, signed by signer when it holds the runner's key.
type keypairWire struct {
	t      *testing.T
	f      *flooder
	signer ssh.Signer
}

func newKeypairWire(t *testing.T, url, keyPath string) *keypairWire {
	t.Helper()
	private, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(private)
	if err != nil {
		t.Fatal(err)
	}
	return &keypairWire{t: t, f: newFlooder(t, url, "127.0.0.1", 8, nil), signer: signer}
}

// post sends body to url+path and returns the status and answer.
func (w *keypairWire) post(url, path string, body []byte) (int, string) {
	w.t.Helper()
	resp, err := w.f.c.Post(url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		w.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

// challenge asks url for a challenge of token.
func (w *keypairWire) challenge(url, token string) string {
	w.t.Helper()
	b, _ := json.Marshal(identity.ChallengeRequest{JoinToken: token})
	status, body := w.post(url, identity.PathJoinChallenge, b)
	var c identity.ChallengeResponse
	if status != http.StatusOK || json.Unmarshal([]byte(body), &c) != nil || c.Nonce == "" {
		w.t.Fatalf("challenge of %s: %d %s", token, status, body)
	}
	return c.Nonce
}

// joinBody is the join request of token answering nonce at sequence,
// signed by the runner's key, for an identity output of a fresh key.
func (w *keypairWire) joinBody(token, nonce string, sequence uint64) []byte {
	w.t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		w.t.Fatal(err)
	}
	tlsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&tlsKey.PublicKey)
	if err != nil {
		w.t.Fatal(err)
	}
	outputs := []identity.OutputRequest{{Name: "identity", SSHPublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))),
		TLSPublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}}
	p := identity.KeypairProof{Nonce: nonce, Sequence: sequence, PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(w.signer.PublicKey())))}
	sig, err := w.signer.Sign(rand.Reader, identity.KeypairSigned(token, clusterName, &p, identity.OutputKeysDigest(outputs)))
	if err != nil {
		w.t.Fatal(err)
	}
	p.Signature = base64.StdEncoding.EncodeToString(ssh.Marshal(sig))
	proof, _ := json.Marshal(p)
	b, _ := json.Marshal(identity.JoinRequest{JoinToken: token, Method: "bound_keypair", Proof: string(proof), Outputs: outputs})
	return b
}

// wantRefused posts a join body to url and wants it refused with code.
func (w *keypairWire) wantRefused(what, url string, body []byte, code identity.ErrorCode) {
	w.t.Helper()
	status, answer := w.post(url, identity.PathJoin, body)
	if status == http.StatusOK || !strings.Contains(answer, `"`+string(code)+`"`) {
		w.t.Errorf("%s: answered %d %s; want %s", what, status, answer, code)
	}
}

// TestKeypairChallengeExhaustion: a stranger at the runner's address who
// knows the join token's name, but not its key, asks for 1,000 challenges,
// and the runner still joins at once. A challenge is answered once (here
// and at every replica: TestReplicasKeypairChallenge), for its own join
// token only, and not after 60 s. Before challenges were stateless, the
// 17th unanswered challenge of an address was refused rate_limited, and
// the runner with it, for 60 s.
func TestKeypairChallengeExhaustion(t *testing.T) {
	c := startCluster(t)
	key := filepath.Join(t.TempDir(), "runner", "key")
	sshKeygen(t, key)
	name, _ := addKeypairToken(t, c, "--name", "runner-flood", "--public-key", key+".pub")
	// Another join token bound to the same key.
	other, _ := addKeypairToken(t, c, "--name", "runner-other", "--public-key", key+".pub")
	w := newKeypairWire(t, c.url, key)

	// Asked for now, answered after it expired (at the end).
	stale := w.challenge(c.url, name)
	staleAt := time.Now()

	const asked = 1000
	counts := w.f.flood(t, asked, func() *http.Request {
		req, _ := http.NewRequest(http.MethodPost, c.url+identity.PathJoinChallenge, strings.NewReader(`{"join_token":"`+name+`"}`))
		req.Header.Set("Content-Type", "application/json")
		return req
	})
	if counts[http.StatusOK] != asked {
		t.Errorf("%d challenges asked for by a stranger: answered %v; want all %d (nothing is kept until one is answered)", asked, counts, asked)
	}
	// The runner, from the same address, joins at once, twice.
	start := time.Now()
	mustKeypairIssue(t, c, nil, name, key)
	mustKeypairIssue(t, c, nil, name, key)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the runner's joins after the stranger's challenges took %s", took)
	}

	t.Run("replayed", func(t *testing.T) {
		w.t = t
		seq := sequenceOf(t, key)
		body := w.joinBody(name, w.challenge(c.url, name), seq)
		if status, answer := w.post(c.url, identity.PathJoin, body); status != http.StatusOK {
			t.Fatalf("a raw join answering a fresh challenge: %d %s", status, answer)
		}
		w.wantRefused("the same join again (challenge and signature replayed)", c.url, body, identity.CodeProofReplayed)
		var proof identity.KeypairProof
		var req identity.JoinRequest
		if json.Unmarshal(body, &req) != nil || json.Unmarshal([]byte(req.Proof), &proof) != nil {
			t.Fatal("the join body does not parse")
		}
		w.wantRefused("the answered challenge signed again at the next sequence", c.url, w.joinBody(name, proof.Nonce, seq+1), identity.CodeProofReplayed)
		// The challenge altered: not one the authority issued.
		forged := []byte(w.challenge(c.url, name))
		forged[0] ^= 1
		w.wantRefused("an altered challenge", c.url, w.joinBody(name, string(forged), seq+1), identity.CodeProofInvalid)
	})

	t.Run("another join token's challenge", func(t *testing.T) {
		w.t = t
		w.wantRefused("a challenge of "+other+" answered for "+name, c.url, w.joinBody(name, w.challenge(c.url, other), sequenceOf(t, key)+1), identity.CodeProofInvalid)
	})

	t.Run("expired", func(t *testing.T) {
		w.t = t
		time.Sleep(time.Until(staleAt.Add(verify.ChallengeTTL + time.Second)))
		w.wantRefused("a challenge answered after it expired", c.url, w.joinBody(name, stale, sequenceOf(t, key)+1), identity.CodeProofExpired)
	})
}
