//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// The fault tests run faultClients joining through both replicas while a
// fault strikes, a bounded number of times, then check what was issued.
const faultClients = 16

// joinLoad is what the clients of a fault test saw.
type joinLoad struct {
	mu sync.Mutex
	// issued counts each certificate serial the clients were handed
	// ("tls:<hex>" and "ssh:<n>", as the audit log names them).
	issued map[string]int
	joins  int
	failed int
	// failures counts the failed joins by refusal code ("connection" when
	// the replica could not be reached).
	failures map[string]int
	// replayAdmitted counts proofs admitted a second time when a client
	// sent the proof it had just joined with to the other replica.
	replayAdmitted atomic.Int64
	stop           chan struct{}
	clients        sync.WaitGroup
}

// joinOnce joins replica r with proof as a new client would: a fresh TLS
// connection that checks the pinned CA, fresh keys, and mbot's own retries
// of store_unavailable within timeout.
func joinOnce(r *replica, proof string, timeout time.Duration) (*identity.JoinResponse, error) {
	api, err := client.NewAPI(r.url, r.pin)
	if err != nil {
		return nil, err
	}
	defer api.CloseIdleConnections()
	keys, err := identity.NewKeys()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return api.Join(ctx, &identity.JoinRequest{JoinToken: tokenGitLab, Method: "gitlab", Proof: proof, TTLSeconds: 600,
		Outputs: []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}})
}

// runLoad runs faultClients clients, each joining through the replicas in
// turn with a fresh GitLab ID token, until stopped. After every tenth join
// that returned certificates the client sends the same token to the other
// replica, which must not admit it.
func (rs *replicaSet) runLoad(t *testing.T) *joinLoad {
	load := &joinLoad{issued: map[string]int{}, failures: map[string]int{}, stop: make(chan struct{})}
	stop := load.stop
	for c := range faultClients {
		load.clients.Go(func() {
			for n := c; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				job, err := rs.replicas[0].ci.GitLabEnv(clusterName)
				if err != nil {
					t.Error(err)
					return
				}
				r, other := rs.replicas[n%2], rs.replicas[(n+1)%2]
				resp, err := joinOnce(r, job["MBOT_ID_TOKEN"], 20*time.Second)
				load.mu.Lock()
				if err != nil {
					load.failed++
					var refusal *identity.Error
					if errors.As(err, &refusal) {
						load.failures[string(refusal.Code)]++
					} else {
						load.failures["connection"]++
					}
				} else {
					load.joins++
					for _, out := range resp.Outputs {
						load.issued["tls:"+out.TLSSerial]++
						load.issued[fmt.Sprintf("ssh:%d", out.SSHSerial)]++
					}
				}
				load.mu.Unlock()
				// Every tenth: a replay is a refusal, and refusals from one
				// address are rate limited (20, then 2 a second).
				if err == nil && (n-c)%10 == 0 {
					if _, err := joinOnce(other, job["MBOT_ID_TOKEN"], 20*time.Second); err == nil {
						load.replayAdmitted.Add(1)
					}
				}
			}
		})
	}
	return load
}

// stopLoad stops the clients and waits until each has finished its join
// (which may be retrying store_unavailable within its timeout).
func (l *joinLoad) stopLoad() {
	close(l.stop)
	l.clients.Wait()
}

// checkIssued checks the invariants of a fault test: every certificate a
// client was handed is in the audit log of an admitted join, no serial was
// issued twice, no proof was admitted twice, and every replica serves again
// (without a restart by the test).
func (rs *replicaSet) checkIssued(t *testing.T, load *joinLoad) {
	t.Helper()
	if load.joins == 0 {
		t.Fatalf("no join succeeded under the fault (%d failed)", load.failed)
	}
	audited := map[string]int{}
	for _, ev := range rs.audit(t, "join") {
		if ev.Allowed {
			for _, s := range ev.Serials {
				audited[s]++
			}
		}
	}
	missing, twice := 0, 0
	for serial, n := range load.issued {
		if n > 1 {
			twice++
			t.Errorf("serial %s was handed to %d clients", serial, n)
		}
		if audited[serial] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("serial %s was handed to a client but no admitted join in the audit log holds it", serial)
			}
		}
	}
	for serial, n := range audited {
		if n > 1 {
			t.Errorf("serial %s appears in %d admitted joins of the audit log", serial, n)
		}
	}
	if missing > 0 || twice > 0 {
		t.Errorf("%d serials missing from the audit log, %d issued twice", missing, twice)
	}
	if n := load.replayAdmitted.Load(); n > 0 {
		t.Errorf("%d proofs were admitted a second time by the other replica", n)
	}
	for i, r := range rs.replicas {
		rs.waitServing(t, i, r)
	}
	t.Logf("%d joins returned certificates, %d failed during the faults %v; %d serials audited", load.joins, load.failed, load.failures, len(audited))
	if n := load.failures[string(identity.CodeInternal)]; n > 0 {
		t.Errorf("%d joins failed with internal errors: a fault must answer store_unavailable or drop the connection", n)
	}
}

// waitServing waits until replica r admits a join again by itself.
func (rs *replicaSet) waitServing(t *testing.T, i int, r *replica) {
	t.Helper()
	var err error
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		var job map[string]string
		if job, err = r.ci.GitLabEnv(clusterName); err != nil {
			t.Fatal(err)
		}
		if _, err = joinOnce(r, job["MBOT_ID_TOKEN"], 10*time.Second); err == nil {
			return
		}
	}
	t.Errorf("replica %d does not serve again after the faults: %v", i, err)
}

// TestReplicaKilledUnderLoad kills a replica with SIGKILL five times, the
// two in turn, while 16 clients join through both, and starts it again.
func TestReplicaKilledUnderLoad(t *testing.T) {
	rs := startReplicas(t, 2)
	load := rs.runLoad(t)
	for kill := range 5 {
		time.Sleep(time.Second) // joins in flight on both replicas
		r := rs.replicas[kill%2]
		if err := r.auth.cmd.Process.Kill(); err != nil {
			t.Fatalf("kill -9 replica %d: %v", kill%2, err)
		}
		<-r.auth.exited
		r.start(t)
		waitForPort(t, r.addr, r.auth.exited, r.auth.logs)
	}
	time.Sleep(time.Second)
	load.stopLoad()
	rs.checkIssued(t, load)
}

// TestPostgresRestartUnderLoad restarts PostgreSQL (pg_ctl restart -m
// fast) twice while 16 clients join through both replicas; the replicas
// are not touched and must serve again by themselves.
func TestPostgresRestartUnderLoad(t *testing.T) {
	rs := startReplicas(t, 2)
	load := rs.runLoad(t)
	for range 2 {
		time.Sleep(time.Second)
		rs.pg.Restart(t)
	}
	time.Sleep(time.Second)
	load.stopLoad()
	rs.checkIssued(t, load)
	for i, r := range rs.replicas {
		select {
		case <-r.auth.exited:
			t.Errorf("replica %d exited when PostgreSQL restarted: %v\n%s", i, r.auth.err, r.auth.logs)
		default:
		}
		t.Logf("replica %d answered store_unavailable %d times while PostgreSQL restarted", i, strings.Count(r.auth.logs.String(), "code=store_unavailable"))
	}
}
