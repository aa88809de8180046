package bench

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
)

// The addresses of BenchmarkJoinsDuringFlood: 127.0.0.0/8 is all loopback
// on Linux, so each is a distinct source address the authority counts
// refusals by.
const (
	floodedAddr = "127.0.0.2" // floods garbage joins; valid jobs join from it too (a NAT's egress)
	otherAddr   = "127.0.0.3" // valid jobs only
)

const (
	// validPerAddr is how many valid clients join at once from each address.
	validPerAddr = 16
	// floodConns is how many connections the flood keeps busy at once:
	// half reuse their connection, half dial a fresh TLS connection for
	// each garbage join.
	floodConns = 256
	// minJoins is the fewest valid joins per address and phase, so that a
	// small -benchtime still gives a throughput.
	minJoins = 150
	// rounds is how many times the phases without and with the flood alternate.
	rounds = 3
)

// BenchmarkJoinsDuringFlood is issue 18 item 5's load-and-abuse benchmark.
// Valid joins (each a fresh TLS connection verified against the CA pin, as
// mbot issue does, with a GitHub-shaped RS256 token) run from two
// addresses, validPerAddr clients each, first with nothing else going on
// and then while floodedAddr floods garbage joins over floodConns
// connections: bodies that are not JSON, proofs that are not JWTs, forged
// signatures, tokens of another repository, replays and unknown join
// tokens. b.N valid joins per address and phase (at least minJoins), in
// rounds alternating phases.
//
// It reports each address's valid joins/s during the flood as a ratio to
// the same address's in the same run without it (flooded-ratio,
// other-ratio; the goal is at least 0.8 for both), and fails if a valid
// proof is refused at all. The flood's clients share the cores with the
// authority, as the valid clients do, so the ratios are a lower bound.
func BenchmarkJoinsDuringFlood(b *testing.B) {
	n := max(b.N, minJoins)
	e := startEnv(b)
	host := e.URL[len("https://"):]
	keys, err := identity.NewKeys()
	if err != nil {
		b.Fatal(err)
	}
	outputs := []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}
	joinRequest := func(token, proof string) []byte {
		body, _ := json.Marshal(identity.JoinRequest{JoinToken: token, Method: "github", Proof: proof, TTLSeconds: 3600, Outputs: outputs})
		return body
	}
	// Serialized HTTP requests, one per valid join, built before the clock
	// starts: the load generator shares the cores with the authority.
	n = n / rounds * rounds
	tokens := e.mintTokens(b, 4*n+1)
	raw := func(body []byte) []byte {
		req, _ := http.NewRequest(http.MethodPost, "https://"+host+identity.PathJoin, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Close = true
		var buf bytes.Buffer
		if err := req.Write(&buf); err != nil {
			b.Fatal(err)
		}
		return buf.Bytes()
	}
	valid := make([][]byte, 4*n)
	for i := range valid {
		valid[i] = raw(joinRequest("github-deploy", tokens[i]))
	}
	tlsCfg, err := client.PinnedTLSConfig(e.URL, e.Pin)
	if err != nil {
		b.Fatal(err)
	}

	// The garbage, every kind of refusal an attacker without a proof can
	// cause. The replayed token is joined once first.
	replayed := tokens[4*n]
	if err := validJoin(host, "127.0.0.1", tlsCfg, raw(joinRequest("github-deploy", replayed))); err != nil {
		b.Fatal(err)
	}
	claims := simci.GitHubClaims()
	claims["aud"], claims["repository"] = "bench", "mallory/app"
	otherRepo, err := e.Issuer.Mint(claims)
	if err != nil {
		b.Fatal(err)
	}
	forged := tokens[0][:strings.LastIndexByte(tokens[0], '.')+1] + strings.Repeat("A", 342)
	garbage := [][]byte{
		[]byte(`{"join_token": "github-deploy", "method": `),
		[]byte("not json at all"),
		joinRequest("github-deploy", "not.a.jwt"),
		joinRequest("github-deploy", forged),
		joinRequest("github-deploy", otherRepo),
		joinRequest("github-deploy", replayed),
		joinRequest("no-such-token", tokens[1]),
	}

	// phase runs the valid joins reqs from each address at once, and adds
	// each address's joins and time to sums; a valid join that fails is
	// counted.
	var refused atomic.Int64
	var firstRefusal sync.Once
	type sums struct{ joins, seconds [2]float64 }
	phase := func(reqs [2][][]byte, s *sums) {
		var wg sync.WaitGroup
		for a, addr := range []string{floodedAddr, otherAddr} {
			wg.Go(func() {
				var next atomic.Int64
				var clients sync.WaitGroup
				start := time.Now()
				for range validPerAddr {
					clients.Go(func() {
						for i := int(next.Add(1)) - 1; i < len(reqs[a]); i = int(next.Add(1)) - 1 {
							if err := validJoin(host, addr, tlsCfg, reqs[a][i]); err != nil {
								refused.Add(1)
								firstRefusal.Do(func() { b.Errorf("a valid join from %s: %v", addr, err) })
							}
						}
					})
				}
				clients.Wait()
				s.joins[a] += float64(len(reqs[a]))
				s.seconds[a] += time.Since(start).Seconds()
			})
		}
		wg.Wait()
	}

	// Phases without and with the flood alternate, rounds times, so that
	// the shared machine's drift weighs on both alike.
	var base, during sums
	var garbageAnswers, floodSeconds float64
	statuses := map[int]int{}
	per := n / rounds
	b.ResetTimer()
	for r := range rounds {
		chunk := func(k int) [2][][]byte {
			at := (4*r + 2*k) * per
			return [2][][]byte{valid[at : at+per], valid[at+per : at+2*per]}
		}
		phase(chunk(0), &base)
		f := startFlood(host, floodedAddr, garbage)
		// The flood runs until the flooded address's bucket is empty and
		// its connections are held back, before the valid jobs start.
		for f.answers.Load() < 100 {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second)
		floodStart, answersStart := time.Now(), f.answers.Load()
		phase(chunk(1), &during)
		garbageAnswers += float64(f.answers.Load() - answersStart)
		floodSeconds += time.Since(floodStart).Seconds()
		for status, k := range f.stop() {
			statuses[status] += k
		}
	}
	b.StopTimer()
	rate := func(s sums, a int) float64 { return s.joins[a] / s.seconds[a] }
	baseFlooded, baseOther := rate(base, 0), rate(base, 1)
	duringFlooded, duringOther := rate(during, 0), rate(during, 1)
	floodRate := garbageAnswers / floodSeconds

	b.ReportMetric(baseFlooded+baseOther, "baseline-joins/s")
	b.ReportMetric(duringFlooded/baseFlooded, "flooded-ratio")
	b.ReportMetric(duringOther/baseOther, "other-ratio")
	b.ReportMetric(floodRate, "garbage-answers/s")
	b.ReportMetric(float64(refused.Load()), "refused-valid")
	b.Logf("n=%d per address and phase; valid joins/s without flood: %s %.0f, %s %.0f; during: %.0f, %.0f; garbage answers by status: %v",
		n, floodedAddr, baseFlooded, otherAddr, baseOther, duringFlooded, duringOther, statuses)
	if refused.Load() > 0 {
		b.Fatalf("%d valid proofs were refused during the flood; want none", refused.Load())
	}
	if statuses[http.StatusOK] > 0 {
		b.Fatalf("%d garbage joins were admitted", statuses[http.StatusOK])
	}
}

// validJoin dials a fresh TLS connection from the address from, verified
// by tlsCfg, and sends one serialized join request over it; anything but
// 200 is an error.
func validJoin(host, from string, tlsCfg *tls.Config, request []byte) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, KeepAlive: -1, Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", host, tlsCfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(request); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("join answered %s: %s", resp.Status, data)
	}
	return nil
}

// flood sends garbage joins from one address over floodConns connections
// until stopped, trusting nothing (an attacker needs no pin).
type flood struct {
	done    chan struct{}
	wg      sync.WaitGroup
	answers atomic.Int64
	mu      sync.Mutex
	status  map[int]int
	clients []*http.Client
}

func startFlood(host, from string, garbage [][]byte) *flood {
	f := &flood{done: make(chan struct{}), status: map[int]int{}}
	transport := func(keepAlive bool) *http.Transport {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
		return &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: !keepAlive, MaxConnsPerHost: floodConns, MaxIdleConnsPerHost: floodConns,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	}
	clients := []*http.Client{{Transport: transport(true), Timeout: 30 * time.Second}, {Transport: transport(false), Timeout: 30 * time.Second}}
	for w := range floodConns {
		f.wg.Go(func() {
			c := clients[w%2]
			for i := w; ; i++ {
				select {
				case <-f.done:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodPost, "https://"+host+identity.PathJoin, bytes.NewReader(garbage[i%len(garbage)]))
				status := 0
				if resp, err := c.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				f.answers.Add(1)
				f.mu.Lock()
				f.status[status]++
				f.mu.Unlock()
			}
		})
	}
	f.clients = clients
	return f
}

// stop ends the flood and returns its answers counted by status (0: no answer).
func (f *flood) stop() map[int]int {
	close(f.done)
	f.wg.Wait()
	for _, c := range f.clients {
		c.CloseIdleConnections()
	}
	return f.status
}
