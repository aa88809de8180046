package bench

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
)

// concurrency is the number of clients joining at once in BenchmarkJoins.
const concurrency = 64

const botsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec: {logins: ["{{internal.logins}}"], db_users: [ci_migrate], db_names: [app],
  kubernetes_users: [ci-deployer], kubernetes_groups: [deployers], spiffe_ids: [/ci/app],
  jwt_audiences: [sts.amazonaws.com]}
---
kind: database
version: v1
metadata: {name: prod-pg}
spec: {protocol: postgres, uri: "db.bench.internal:5432", ca_issued_by_authority: true}
---
kind: kubernetes_cluster
version: v1
metadata: {name: prod}
spec: {api_server: "https://kube.bench.internal:6443", ca: KUBE_CA}
---
kind: bot
version: v1
metadata: {name: deployer}
spec: {roles: [deploy], traits: {logins: [ci]}}
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[1]s
    allow: [{repository: acme/app, ref: refs/heads/main}]
`

type env struct{ *authoritytest.Env }

func startEnv(tb testing.TB) *env {
	return &env{authoritytest.Start(tb, "bench", strings.Replace(botsYAML, "KUBE_CA", strconv.Quote(benchCAPEM(tb)), 1), "")}
}

// benchCAPEM is a throwaway CA certificate standing for an API server's CA.
func benchCAPEM(tb testing.TB) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kube bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// mintTokens signs n GitHub-shaped tokens for the authority's audience on all cores.
func (e *env) mintTokens(tb testing.TB, n int) []string { return mintTokens(tb, e.Issuer, n) }

// mintTokens signs n GitHub-shaped tokens of iss for the audience "bench" on all cores.
func mintTokens(tb testing.TB, iss *simci.Issuer, n int) []string {
	claims := simci.GitHubClaims()
	claims["aud"] = "bench"
	tokens := make([]string, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				tok, err := iss.Mint(claims)
				if err != nil {
					panic(err)
				}
				tokens[i] = tok
			}
		})
	}
	wg.Wait()
	return tokens
}

// BenchmarkJoins measures the authority's joins per second with 64
// concurrent clients, each join on a fresh TLS connection, with GitHub-shaped
// RS256 tokens verified, replay and audit records written.
func BenchmarkJoins(b *testing.B) {
	e := startEnv(b)
	tokens := e.mintTokens(b, b.N)
	keys, err := identity.NewKeys()
	if err != nil {
		b.Fatal(err)
	}
	// Request bodies are built before the clock starts: the load generator
	// shares the cores with the authority, so it does no more than it must.
	requests := make([][]byte, b.N)
	host := e.URL[len("https://"):]
	for i, tok := range tokens {
		body, _ := json.Marshal(identity.JoinRequest{
			JoinToken: "github-deploy", Method: "github", Proof: tok, TTLSeconds: 3600,
			Outputs: []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}},
		})
		req, _ := http.NewRequest(http.MethodPost, "https://"+host+identity.PathJoin, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Close = true
		var buf bytes.Buffer
		if err := req.Write(&buf); err != nil {
			b.Fatal(err)
		}
		requests[i] = buf.Bytes()
	}
	// The load generator does not verify the authority's certificate, like
	// wrk or hey: verification is client work, and the clients share these
	// two cores with the authority being measured. The handshake the
	// authority does (key exchange, ECDSA signature) is the same as for a verifying client, and the client offers
	// the key exchanges mbot issue offers.
	tlsCfg := &tls.Config{InsecureSkipVerify: true, CurvePreferences: identity.TLSCurves}
	latencies := make([]time.Duration, b.N)
	var next atomic.Int64
	var failures atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				if err := joinOnce(host, tlsCfg, requests[i]); err != nil {
					if failures.Add(1) == 1 {
						b.Error(err)
					}
				}
				latencies[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "joins/s")
	b.ReportMetric(ms(latencies[len(latencies)/2]), "p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
	b.ReportMetric(float64(failures.Load()), "failures")
}

// joinOnce dials a new TLS connection and sends one serialized HTTP join
// request over it; 200 and 201 (step-ca's answer) are successes.
func joinOnce(host string, tlsCfg *tls.Config, request []byte) error {
	conn, err := tls.DialWithDialer(&net.Dialer{KeepAlive: -1}, "tcp", host, tlsCfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write(request); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("join answered %s: %s", resp.Status, data)
	}
	return nil
}

// BenchmarkIssue measures one-shot `mbot issue` end to end on loopback:
// process start, GitHub token fetch, key generation, TLS, verify, sign, write.
// `bench/minimal issue`, which does only the unavoidable part of that work
// (bench/minimal/issue.go), runs alternately in the same loop against the
// same authority; x-minimal is the ratio of the p50s.
func BenchmarkIssue(b *testing.B) {
	bin := buildMbot(b)
	minimal := buildMinimal(b)
	e := startEnv(b)
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.TempDir(),
		"MBOT_AUTHORITY=" + e.URL, "MBOT_CA_PIN=" + e.Pin, "MBOT_TOKEN=github-deploy"}
	for k, v := range e.Issuer.GitHubEnv() {
		environ = append(environ, k+"="+v)
	}
	out, minimalOut := filepath.Join(b.TempDir(), "id"), filepath.Join(b.TempDir(), "id")
	if err := e.Issuer.SignAhead(2*b.N, "bench"); err != nil {
		b.Fatal(err)
	}
	run := func(path, out string) time.Duration {
		cmd := exec.Command(path, "issue", "--out", out)
		cmd.Env = environ
		t0 := time.Now()
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s issue: %v\n%s", path, err, msg)
		}
		return time.Since(t0)
	}
	latencies := make([]time.Duration, b.N)
	minimalTimes := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		latencies[i] = run(bin, out)
		minimalTimes[i] = run(minimal, minimalOut)
	}
	b.StopTimer()
	// Both wrote the same identity files.
	for _, name := range []string{identity.FileSSHCert, identity.FileTLSCert, identity.FileIdentityJSON} {
		if _, err := os.Stat(filepath.Join(minimalOut, name)); err != nil {
			b.Fatalf("bench/minimal issue: %v", err)
		}
	}
	slices.Sort(latencies)
	slices.Sort(minimalTimes)
	p50, minimalP50 := latencies[len(latencies)/2], minimalTimes[len(minimalTimes)/2]
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
	b.ReportMetric(ms(minimalP50), "minimal-p50-ms")
	b.ReportMetric(float64(p50)/float64(minimalP50), "x-minimal")
}

// multiOutputs are the outputs of BenchmarkIssueMultiOutput beside an
// identity: a database, a kubernetes, an application and a
// workload-identity-jwt output, five in all (issue 21's goal: five cost at
// most 1.25x one).
var multiOutputs = []string{
	"  - type: database\n    destination: %[1]s/db\n    database: prod-pg\n    username: ci_migrate\n    db_name: app\n",
	"  - type: kubernetes\n    destination: %[1]s/kube\n    kubernetes_cluster: prod\n",
	"  - type: application\n    destination: %[1]s/svid\n    spiffe_id: /ci/app\n",
	"  - type: workload-identity-jwt\n    destination: %[1]s/jwt\n    audiences: [sts.amazonaws.com]\n    spiffe_id: /ci/app\n",
}

// BenchmarkIssueMultiOutput is BenchmarkIssue with five outputs, one of
// each type but ssh_host, in one join through mbot.yaml, run alternately in
// the same loop with the same command for the identity output alone, so
// that the ratio (x-one) compares the two in the same window of a shared
// machine. The destinations are in the temporary directory (tmpdir) and,
// where /dev/shm is a tmpfs, there too (tmpfs): five outputs create about
// 40 files and directories where one creates 10, and what a file creation
// costs depends on the filesystem (see docs/internals/performance.md).
func BenchmarkIssueMultiOutput(b *testing.B) {
	bin := buildMbot(b)
	e := startEnv(b)
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.TempDir(),
		"MBOT_AUTHORITY=" + e.URL, "MBOT_CA_PIN=" + e.Pin, "MBOT_TOKEN=github-deploy"}
	for k, v := range e.Issuer.GitHubEnv() {
		environ = append(environ, k+"="+v)
	}
	b.Run("tmpdir", func(b *testing.B) { benchmarkIssueMultiOutput(b, bin, e, environ, b.TempDir()) })
	b.Run("tmpfs", func(b *testing.B) {
		if mounts, _ := os.ReadFile("/proc/self/mounts"); !strings.Contains(string(mounts), " /dev/shm tmpfs ") {
			skipreport.Skip(b, "/dev/shm is not a tmpfs")
		}
		work, err := os.MkdirTemp("/dev/shm", "mbot-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(work) })
		benchmarkIssueMultiOutput(b, bin, e, environ, work)
	})
}

func benchmarkIssueMultiOutput(b *testing.B, bin string, e *env, environ []string, work string) {
	one := "outputs:\n  - destination: %[1]s/one\n"
	five := "outputs:\n  - destination: %[1]s/id\n"
	for _, o := range multiOutputs {
		five += o
	}
	for name, config := range map[string]string{"one.yaml": one, "five.yaml": five} {
		if err := os.WriteFile(filepath.Join(work, name), fmt.Appendf(nil, config, work), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Issuer.SignAhead(2*b.N, "bench"); err != nil {
		b.Fatal(err)
	}
	run := func(config string) time.Duration {
		cmd := exec.Command(bin, "issue", "--config", filepath.Join(work, config))
		cmd.Env = environ
		t0 := time.Now()
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("mbot issue --config %s: %v\n%s", config, err, msg)
		}
		return time.Since(t0)
	}
	fiveTimes := make([]time.Duration, b.N)
	oneTimes := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		fiveTimes[i] = run("five.yaml")
		oneTimes[i] = run("one.yaml")
	}
	b.StopTimer()
	slices.Sort(fiveTimes)
	slices.Sort(oneTimes)
	fiveP50, oneP50 := fiveTimes[len(fiveTimes)/2], oneTimes[len(oneTimes)/2]
	b.ReportMetric(ms(fiveP50), "p50-ms")
	b.ReportMetric(ms(fiveTimes[len(fiveTimes)*99/100]), "p99-ms")
	b.ReportMetric(ms(oneP50), "one-p50-ms")
	b.ReportMetric(float64(fiveP50)/float64(oneP50), "x-one")
	b.ReportMetric(float64(1+len(multiOutputs)), "outputs")
}

// BenchmarkStart measures process start: `mbot --version`, and the same
// for bench/minimal, a program that links the design card's packages and
// does only the unavoidable work, run alternately in the same loop so the
// ratio compares the two in the same window of a shared machine.
func BenchmarkStart(b *testing.B) {
	bin := buildMbot(b)
	minimal := buildMinimal(b)
	mbotTimes := make([]time.Duration, b.N)
	minimalTimes := make([]time.Duration, b.N)
	run := func(path string) time.Duration {
		t0 := time.Now()
		if msg, err := exec.Command(path, "--version").CombinedOutput(); err != nil {
			b.Fatalf("%s --version: %v\n%s", path, err, msg)
		}
		return time.Since(t0)
	}
	b.ResetTimer()
	for i := range b.N {
		mbotTimes[i] = run(bin)
		minimalTimes[i] = run(minimal)
	}
	b.StopTimer()
	slices.Sort(mbotTimes)
	slices.Sort(minimalTimes)
	mbotP50, minimalP50 := mbotTimes[len(mbotTimes)/2], minimalTimes[len(minimalTimes)/2]
	b.ReportMetric(ms(mbotP50), "p50-ms")
	b.ReportMetric(ms(minimalP50), "minimal-p50-ms")
	b.ReportMetric(float64(mbotP50)/float64(minimalP50), "x-minimal")
	if st, err := os.Stat(bin); err == nil {
		b.ReportMetric(float64(st.Size())/(1<<20), "binary-MB")
	}
	if st, err := os.Stat(minimal); err == nil {
		b.ReportMetric(float64(st.Size())/(1<<20), "minimal-binary-MB")
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error

	minimalOnce sync.Once
	minimalPath string
	minimalErr  error
)

// buildMbot builds the mbot binary the way a release does (.goreleaser.yaml:
// static, stripped, without urfave/cli's man page generator).
func buildMbot(b *testing.B) string {
	buildOnce.Do(func() { binPath, buildErr = releaseBuild("github.com/mbot-dev/mbot", "mbot") })
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return binPath
}

// buildMinimal builds bench/minimal with the same flags as buildMbot.
func buildMinimal(b *testing.B) string {
	minimalOnce.Do(func() {
		minimalPath, minimalErr = releaseBuild("github.com/mbot-dev/mbot/bench/minimal", "minimal")
	})
	if minimalErr != nil {
		b.Fatal(minimalErr)
	}
	return minimalPath
}

func releaseBuild(pkg, name string) (string, error) {
	dir, err := os.MkdirTemp("", "mbot-bench-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	// A release sets the version with -X (.goreleaser.yaml), so mbot does
	// not parse the embedded build information at start; bench/minimal
	// has its version as a constant.
	ldflags := "-s -w -X github.com/mbot-dev/mbot/commands.version=v0.0.0-bench"
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "urfave_cli_no_docs", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
