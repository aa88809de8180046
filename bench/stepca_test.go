//go:build linux

package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"golang.org/x/crypto/ssh"
)

// stepCAModule is the step-ca BenchmarkJoinsVsStepCA compares with. It is
// built from the Go module proxy into a temporary directory (go install
// pkg@version leaves this module's go.mod alone); nothing of it is
// committed. MBOT_BENCH_STEP_CA names a step-ca binary to use instead.
const stepCAModule = "github.com/smallstep/certificates/cmd/step-ca@v0.30.2"

// stepCARounds is how many times BenchmarkJoinsVsStepCA alternates the two.
const stepCARounds = 3

// BenchmarkJoinsVsStepCA runs BenchmarkJoinsByStorage's sqlite load and
// the same job on step-ca 0.30.2 alternately, stepCARounds times in one
// run, and reports both and their ratio. Each server is a process of its
// own (mbot authority start, step-ca) beside the load generator's. A job is what one mbot join
// hands a CI job: an X.509 and an SSH certificate for its GitHub Actions
// token. On step-ca (an OIDC provisioner trusting the same simulated
// issuer, badger database, as `step ca init --ssh` sets it up) that is two
// requests, /1.0/sign and /1.0/ssh/sign, each with its own token, as
// `step ca certificate` and `step ssh certificate` make them. Both get 64
// clients, a fresh TLS connection per request that verifies the server's
// chain, the same key exchange (identity.TLSCurves) and the same
// load generator:
//
//	go test ./bench -run '^$' -bench JoinsVsStepCA -benchtime 3000x -timeout 30m
//
// (The first run compiles step-ca: about ten minutes on a busy 2-core
// machine, half a minute once the build cache holds it.)
//
// x-step-ca is mbot's joins/s over step-ca's jobs/s (the median round);
// min-x and max-x are the rounds' extremes.
func BenchmarkJoinsVsStepCA(b *testing.B) {
	stepCA := buildStepCA(b)
	iss, err := simci.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { iss.Close() })
	mbot := startMbotProcess(b, buildMbot(b), iss)
	sca := startStepCA(b, stepCA, iss)
	n := max(b.N/stepCARounds, concurrency)
	var mbotRounds, stepRounds []loadResult
	b.ResetTimer()
	for range stepCARounds {
		b.StopTimer()
		mbotLoad := mbotJoinLoad(b, iss, []joinTarget{mbot}, n)
		stepLoad := sca.jobLoad(b, n)
		b.StartTimer()
		mbotRounds = append(mbotRounds, runLoad(b, n, mbotLoad))
		stepRounds = append(stepRounds, runLoad(b, n, stepLoad))
	}
	b.StopTimer()
	ratios := make([]float64, stepCARounds)
	for i := range ratios {
		ratios[i] = mbotRounds[i].rate / stepRounds[i].rate
	}
	m, s := medianRound(mbotRounds), medianRound(stepRounds)
	b.ReportMetric(m.rate, "joins/s")
	b.ReportMetric(ms(m.p99), "p99-ms")
	b.ReportMetric(s.rate, "step-jobs/s")
	b.ReportMetric(ms(s.p99), "step-p99-ms")
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "x-step-ca")
	b.ReportMetric(ratios[0], "min-x")
	b.ReportMetric(ratios[len(ratios)-1], "max-x")
	for i := range mbotRounds {
		b.Logf("round %d: mbot %.0f joins/s p99 %.1f ms; step-ca %.0f jobs/s p99 %.1f ms; %.2fx",
			i+1, mbotRounds[i].rate, ms(mbotRounds[i].p99), stepRounds[i].rate, ms(stepRounds[i].p99), mbotRounds[i].rate/stepRounds[i].rate)
	}
}

// loadResult is one run of a load: jobs per second and latency percentiles.
type loadResult struct {
	rate     float64
	p50, p99 time.Duration
}

func medianRound(rs []loadResult) loadResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b loadResult) int { return int(a.rate - b.rate) })
	return s[len(s)/2]
}

// runLoad runs job(0..n-1) from 64 clients and measures it; the first
// failure fails the benchmark.
func runLoad(b *testing.B, n int, job func(i int) error) loadResult {
	latencies := make([]time.Duration, n)
	var next, failures atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				if err := job(i); err != nil && failures.Add(1) == 1 {
					b.Error(err)
				}
				latencies[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	return loadResult{rate: float64(n) / elapsed.Seconds(), p50: latencies[n/2], p99: latencies[n*99/100]}
}

// joinTarget is an authority replica a load joins through: its host:port
// and the TLS CA its serving certificate chains to.
type joinTarget struct {
	host string
	ca   *x509.Certificate
}

// targetOf is the joinTarget of an in-process authority.
func targetOf(e *authoritytest.Env) joinTarget {
	return joinTarget{host: e.URL[len("https://"):], ca: e.Authority.CAs().TLSCert}
}

// mbotJoinLoad is n joins with fresh tokens of iss through replicas[i%len],
// each on a fresh TLS connection that verifies the authority's chain.
func mbotJoinLoad(b *testing.B, iss *simci.Issuer, replicas []joinTarget, n int) func(i int) error {
	tokens := mintTokens(b, iss, n)
	keys, err := identity.NewKeys()
	if err != nil {
		b.Fatal(err)
	}
	hosts := make([]string, len(replicas))
	tlsCfgs := make([]*tls.Config, len(replicas))
	for i, r := range replicas {
		hosts[i] = r.host
		roots := x509.NewCertPool()
		roots.AddCert(r.ca)
		tlsCfgs[i] = &tls.Config{RootCAs: roots, CurvePreferences: identity.TLSCurves, MinVersion: tls.VersionTLS13}
	}
	requests := make([][]byte, n)
	for i, tok := range tokens {
		body, _ := json.Marshal(identity.JoinRequest{
			JoinToken: "github-deploy", Method: "github", Proof: tok, TTLSeconds: 3600,
			Outputs: []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}},
		})
		requests[i] = rawRequest(b, hosts[i%len(hosts)], identity.PathJoin, body)
	}
	return func(i int) error {
		r := i % len(hosts)
		return joinOnce(hosts[r], tlsCfgs[r], requests[i])
	}
}

// rawRequest is a serialized one-shot JSON POST (Connection: close).
func rawRequest(b *testing.B, host, path string, body []byte) []byte {
	req, _ := http.NewRequest(http.MethodPost, "https://"+host+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

var (
	stepCAOnce sync.Once
	stepCAPath string
	stepCAErr  error
)

// buildStepCA returns MBOT_BENCH_STEP_CA or builds stepCAModule, skipping
// the benchmark when neither is possible (no module proxy).
func buildStepCA(b *testing.B) string {
	if p := os.Getenv("MBOT_BENCH_STEP_CA"); p != "" {
		return p
	}
	stepCAOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mbot-bench-step-ca-")
		if err != nil {
			stepCAErr = err
			return
		}
		cmd := exec.Command("go", "install", stepCAModule)
		cmd.Dir = dir // outside this module: go install pkg@version ignores go.mod anyway
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=")
		if msg, err := cmd.CombinedOutput(); err != nil {
			stepCAErr = fmt.Errorf("go install %s: %v\n%s", stepCAModule, err, msg)
			return
		}
		stepCAPath = filepath.Join(dir, "step-ca")
	})
	if stepCAErr != nil {
		skipreport.Skipf(b, "no step-ca to compare with (set MBOT_BENCH_STEP_CA or let go install reach the module proxy): %v", stepCAErr)
	}
	return stepCAPath
}

// startMbotProcess serves `mbot authority start` (bin) in a process of its
// own with BenchmarkJoins' resources for iss, logging to /dev/null, and
// returns where to join once it answers.
func startMbotProcess(b *testing.B, bin string, iss *simci.Issuer) joinTarget {
	dir := b.TempDir()
	resources := strings.ReplaceAll(strings.Replace(botsYAML, "KUBE_CA", strconv.Quote(benchCAPEM(b)), 1), "%[1]s", iss.URL)
	addr := freeAddr(b)
	config := filepath.Join(dir, "authority.yaml")
	for name, body := range map[string]string{
		"bots.yaml":      resources,
		"authority.yaml": "cluster_name: bench\nlisten: " + addr + "\ndata_dir: ./data\nresources: [bots.yaml]\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "authority", "start", "--config", config)
	var logs bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &logs, max: 64 << 10}
	if err := cmd.Start(); err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	waitReady(b, "mbot authority", "https://"+addr+identity.PathPing, &tls.Config{InsecureSkipVerify: true}, done, &logs)
	out, err := exec.Command(bin, "authority", "export", "--type", "tls-ca", "--config", config).Output()
	if err != nil {
		b.Fatalf("mbot authority export --type tls-ca: %v", err)
	}
	block, _ := pem.Decode(out)
	if block == nil {
		b.Fatalf("mbot authority export --type tls-ca printed no PEM: %q", out)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	return joinTarget{host: addr, ca: ca}
}

// limitedBuffer keeps the first max bytes written to it (a server's start
// log, for a failure message) and discards the rest.
type limitedBuffer struct {
	mu  sync.Mutex
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady waits until url answers 200, failing with the server's log if
// it exits (done closes) or 30 seconds pass.
func waitReady(b *testing.B, what, url string, tlsCfg *tls.Config, done <-chan struct{}, logs fmt.Stringer) {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			b.Fatalf("%s exited: %s", what, logs)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not answer %s: %v\n%s", what, url, err, logs)
		}
	}
}

// stepCA is a running step-ca with an OIDC provisioner for iss.
type stepCA struct {
	iss   *simci.Issuer
	host  string
	tls   *tls.Config
	csr   string // PEM
	sshPK []byte // wire format
}

// startStepCA sets up and serves step-ca as `step ca init --ssh` would
// (P-256 root and intermediate, P-256 SSH CA keys, badger database), with
// an OIDC provisioner whose client ID is the authority's audience.
func startStepCA(b *testing.B, bin string, iss *simci.Issuer) *stepCA {
	dir := b.TempDir()
	rootKey, rootCert := stepCert(b, nil, nil, "bench Root CA", true)
	intKey, intCert := stepCert(b, rootKey, rootCert, "bench Intermediate CA", true)
	writePEM(b, filepath.Join(dir, "root_ca.crt"), "CERTIFICATE", rootCert.Raw)
	writePEM(b, filepath.Join(dir, "intermediate_ca.crt"), "CERTIFICATE", intCert.Raw)
	writeECKey(b, filepath.Join(dir, "intermediate_ca_key"), intKey)
	for _, name := range []string{"ssh_user_ca_key", "ssh_host_ca_key"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		writeECKey(b, filepath.Join(dir, name), k)
	}
	addr := freeAddr(b)
	config := map[string]any{
		"root": filepath.Join(dir, "root_ca.crt"), "crt": filepath.Join(dir, "intermediate_ca.crt"), "key": filepath.Join(dir, "intermediate_ca_key"),
		"address": addr, "dnsNames": []string{"127.0.0.1", "localhost"},
		"ssh":    map[string]any{"hostKey": filepath.Join(dir, "ssh_host_ca_key"), "userKey": filepath.Join(dir, "ssh_user_ca_key")},
		"logger": map[string]any{"format": "text"},
		"db":     map[string]any{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{"provisioners": []any{map[string]any{
			"type": "OIDC", "name": "github-actions", "clientID": "bench",
			"configurationEndpoint": iss.URL + "/.well-known/openid-configuration",
			"claims":                map[string]any{"enableSSHCA": true},
		}}},
		"tls": map[string]any{"minVersion": 1.2, "maxVersion": 1.3, "renegotiation": false},
	}
	cfg, _ := json.MarshalIndent(config, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "ca.json"), cfg, 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, filepath.Join(dir, "ca.json"))
	logs := &limitedBuffer{b: &bytes.Buffer{}, max: 64 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	roots := x509.NewCertPool()
	roots.AddCert(rootCert)
	s := &stepCA{iss: iss, host: addr, tls: &tls.Config{RootCAs: roots, CurvePreferences: identity.TLSCurves, MinVersion: tls.VersionTLS13}}
	waitReady(b, "step-ca", "https://"+addr+"/health", s.tls, done, logs)
	// One key per client run, as a job's: its CSR and SSH public key.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "repo:acme/app:ref:refs/heads/main"}}, key)
	if err != nil {
		b.Fatal(err)
	}
	s.csr = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	sshKey, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		b.Fatal(err)
	}
	s.sshPK = sshKey.Marshal()
	return s
}

// jobLoad is n jobs, each an X.509 and an SSH certificate request with a
// token of its own, each on a fresh verified TLS connection.
func (s *stepCA) jobLoad(b *testing.B, n int) func(i int) error {
	tokens := mintTokens(b, s.iss, 2*n)
	x509Reqs, sshReqs := make([][]byte, n), make([][]byte, n)
	for i := range n {
		body, _ := json.Marshal(map[string]any{"csr": s.csr, "ott": tokens[2*i], "notAfter": "1h"})
		x509Reqs[i] = rawRequest(b, s.host, "/1.0/sign", body)
		body, _ = json.Marshal(map[string]any{"publicKey": s.sshPK, "ott": tokens[2*i+1], "certType": "user", "validBefore": "1h"})
		sshReqs[i] = rawRequest(b, s.host, "/1.0/ssh/sign", body)
	}
	return func(i int) error {
		if err := joinOnce(s.host, s.tls, x509Reqs[i]); err != nil {
			return fmt.Errorf("step-ca /1.0/sign: %w", err)
		}
		if err := joinOnce(s.host, s.tls, sshReqs[i]); err != nil {
			return fmt.Errorf("step-ca /1.0/ssh/sign: %w", err)
		}
		return nil
	}
}

// stepCert makes a P-256 CA certificate, self-signed when parent is nil.
func stepCert(b *testing.B, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, cn string, ca bool) (*ecdsa.PrivateKey, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		b.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	return key, cert
}

func writePEM(b *testing.B, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
}

func writeECKey(b *testing.B, path string, k *ecdsa.PrivateKey) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		b.Fatal(err)
	}
	writePEM(b, path, "EC PRIVATE KEY", der)
}
