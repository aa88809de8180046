//go:build linux

package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// TestReplicasKeypairChallenge: replicas share the challenge key (a row of
// the store, sealed like the CA keys) and the record of answered
// challenges, so that a challenge one replica issued is answered at the
// other, once: the same answer again, at either replica or at both at the
// same instant, is refused proof_replayed.
func TestReplicasKeypairChallenge(t *testing.T) {
	rs := startReplicas(t, 2)
	r0, r1 := rs.replicas[0], rs.replicas[1]
	key := filepath.Join(t.TempDir(), "runner", "key")
	sshKeygen(t, key)
	const name = "runner-ha"
	mustMbot(t, r0.env, "tokens", "add", "--bot", botName, "--config", r0.config, "--method", "bound_keypair", "--name", name, "--public-key", key+".pub")
	w := newKeypairWire(t, r0.url, key)
	// The other replica learns of the join token by LISTEN/NOTIFY.
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, body := w.post(r1.url, identity.PathJoinChallenge, []byte(`{"join_token":"`+name+`"}`))
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica 1 does not know join token %s: %d %s", name, status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	body := w.joinBody(name, w.challenge(r0.url, name), 0)
	if status, answer := w.post(r1.url, identity.PathJoin, body); status != http.StatusOK {
		t.Fatalf("replica 1 answering replica 0's challenge: %d %s", status, answer)
	}
	w.wantRefused("the join again at replica 0", r0.url, body, identity.CodeProofReplayed)
	w.wantRefused("the join again at replica 1", r1.url, body, identity.CodeProofReplayed)

	for round := range 5 {
		body := w.joinBody(name, w.challenge(rs.replicas[round%2].url, name), uint64(round+1))
		statuses := make([]int, 2)
		answers := make([]string, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, r := range rs.replicas {
			wg.Go(func() {
				<-start
				statuses[i], answers[i] = w.post(r.url, identity.PathJoin, body)
			})
		}
		close(start)
		wg.Wait()
		admitted, replayed := 0, 0
		for i := range statuses {
			switch {
			case statuses[i] == http.StatusOK:
				admitted++
			case strings.Contains(answers[i], `"`+string(identity.CodeProofReplayed)+`"`):
				replayed++
			}
		}
		if admitted != 1 || replayed != 1 {
			t.Errorf("round %d: one challenge answered at both replicas at once: %d %s / %d %s; want one admitted, one %s",
				round, statuses[0], answers[0], statuses[1], answers[1], identity.CodeProofReplayed)
		}
	}
}
