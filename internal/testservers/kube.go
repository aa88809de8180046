//go:build linux

package testservers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// KubeVersion is the kube-apiserver that .ci/build-kube-apiserver builds
// and caches; keep the two in step.
const KubeVersion = "v1.37.2"

// KubeConfig is what a test starts kube-apiserver with.
type KubeConfig struct {
	// ClientCA is PEM: the CA whose client certificates the API server
	// accepts (--client-ca-file), e.g. what `mbot authority export
	// --type kubernetes-client-ca` prints. The harness adds its own admin
	// CA to the bundle.
	ClientCA []byte
	// ServiceAccountIssuer is --service-account-issuer and the audience
	// of tokens by default; empty: the server's URL, whose
	// /.well-known/openid-configuration and /openid/v1/jwks then serve
	// the discovery document and keys.
	ServiceAccountIssuer string
}

// KubeAPIServer is a running kube-apiserver with its own etcd, serving
// HTTPS on 127.0.0.1.
type KubeAPIServer struct {
	URL    string // https://127.0.0.1:<port>
	CAPEM  []byte // the CA of the serving certificate (a kubeconfig's certificate-authority-data)
	CAFile string // CAPEM in a file
	// AdminKubeconfig is a kubeconfig file for a cluster-admin (group
	// system:masters), to apply RBAC with Admin.
	AdminKubeconfig      string
	ServiceAccountIssuer string
	EtcdURL              string
	Dir                  string
	kubectl              string
	http                 *http.Client // with the admin certificate
}

// StartKubeAPIServer starts etcd and kube-apiserver (RBAC authorization,
// client certificates from cfg.ClientCA, service account tokens signed by a
// fresh key) on free loopback ports, waits for /readyz, and stops both when
// the test ends. kube-apiserver is $MBOT_KUBE_APISERVER, or the build that
// .ci/build-kube-apiserver cached; kubectl is $MBOT_KUBECTL or the one in
// PATH. Ready in about 5 seconds.
func StartKubeAPIServer(t testing.TB, cfg KubeConfig) *KubeAPIServer {
	t.Helper()
	apiserver := kubeAPIServerBinary(t)
	etcd := require(t, "etcd", "etcd-server", "/usr/bin/etcd")
	kubectl := os.Getenv("MBOT_KUBECTL")
	if kubectl == "" {
		kubectl = require(t, "kubectl", "kubectl")
	}
	dir := t.TempDir()
	k := &KubeAPIServer{Dir: dir, kubectl: kubectl}

	// etcd, in memory as far as a test cares: a fresh data directory.
	clientPort, peerPort := freePort(t), freePort(t)
	k.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	etcdProc := startProcess(t, "etcd", exec.Command(etcd, "--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+k.EtcdURL, "--advertise-client-urls="+k.EtcdURL,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=default="+peer,
		"--logger=zap", "--log-level=warn"), syscall.SIGTERM)
	etcdProc.waitUntil(t, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, k.EtcdURL+"/health", `"health":"true"`)
	})

	port := freePort(t)
	k.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	k.ServiceAccountIssuer = cfg.ServiceAccountIssuer
	if k.ServiceAccountIssuer == "" {
		k.ServiceAccountIssuer = k.URL
	}

	pki := filepath.Join(dir, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name string, content []byte) string {
		p := filepath.Join(pki, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	servingCA := NewCA(t, "kube-apiserver serving CA (test)")
	k.CAPEM = servingCA.CertPEM
	k.CAFile = write("serving_ca.crt", servingCA.CertPEM)
	servingLeaf := localhostServer("kube-apiserver")
	servingLeaf.DNSNames = append(servingLeaf.DNSNames, "kubernetes", "kubernetes.default", "kubernetes.default.svc")
	servingCert, servingKey := servingCA.Issue(t, servingLeaf)
	adminCA := NewCA(t, "kube-apiserver admin client CA (test)")
	adminCert, adminKey := adminCA.Issue(t, Leaf{CommonName: "mbot-test-admin", Organization: []string{"system:masters"}})
	saKey := newKey(t)
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	clientCA := append(append([]byte{}, cfg.ClientCA...), adminCA.CertPEM...)

	args := []string{
		"--etcd-servers=" + k.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + write("serving.crt", servingCert),
		"--tls-private-key-file=" + write("serving.key", servingKey),
		"--client-ca-file=" + write("client_ca.crt", clientCA),
		"--service-account-key-file=" + write("sa.pub", pemBlock("PUBLIC KEY", saPub)),
		"--service-account-signing-key-file=" + write("sa.key", marshalKey(t, saKey)),
		"--service-account-issuer=" + k.ServiceAccountIssuer,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none", // no kubernetes Service endpoints for a loopback address
		"--cert-dir=" + pki,
		"--profiling=false",
	}
	apiProc := startProcess(t, "kube-apiserver", exec.Command(apiserver, args...), syscall.SIGTERM)

	adminPair, err := tls.X509KeyPair(adminCert, adminKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(k.CAPEM)
	k.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{adminPair}}}}
	t.Cleanup(k.http.CloseIdleConnections)
	apiProc.waitUntil(t, func(ctx context.Context) error {
		return httpOK(ctx, k.http, k.URL+"/readyz", "ok")
	})

	k.AdminKubeconfig = k.Kubeconfig(t, "admin", adminCert, adminKey)
	return k
}

// Kubeconfig writes a kubeconfig (one cluster, one user named user, one
// current context) for a client certificate and key (PEM) that trusts the
// server's CA, and returns its path.
func (k *KubeAPIServer) Kubeconfig(t testing.TB, user string, certPEM, keyPEM []byte) string {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: test
  context:
    cluster: test
    user: %[3]s
current-context: test
`, k.URL, b64(k.CAPEM), user, b64(certPEM), b64(keyPEM))
	f, err := os.CreateTemp(k.Dir, "kubeconfig-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(cfg); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// Kubectl runs kubectl as a test's user would, with --kubeconfig and args
// (e.g. "auth", "whoami"), PATH, an empty HOME and a discovery cache shared
// by this server's calls. It returns the standard output, and an error
// with kubectl's message when kubectl exits non-zero.
func (k *KubeAPIServer) Kubectl(t testing.TB, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	return k.kubectlStdin(t, "", kubeconfig, args...)
}

// Admin runs kubectl as cluster-admin with stdin (e.g. "apply", "-f", "-"
// with YAML) and returns its output, failing the test when kubectl fails.
func (k *KubeAPIServer) Admin(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := k.kubectlStdin(t, stdin, k.AdminKubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl %s as admin: %v", strings.Join(args, " "), err)
	}
	return out
}

func (k *KubeAPIServer) kubectlStdin(t testing.TB, stdin, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	env := []string{"KUBECACHEDIR=" + filepath.Join(k.Dir, "kubectl-cache")}
	return runClient(t, env, stdin, k.kubectl, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
}

// KubectlPath is the kubectl that Kubectl runs.
func (k *KubeAPIServer) KubectlPath() string { return k.kubectl }

// kubeAPIServerBinary is $MBOT_KUBE_APISERVER, or the cached build of
// KubeVersion (or of another version, the newest), or kube-apiserver in
// PATH.
func kubeAPIServerBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MBOT_KUBE_APISERVER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			missing(t, fmt.Sprintf("MBOT_KUBE_APISERVER names no kube-apiserver (%v); run .ci/build-kube-apiserver", err))
		}
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	cached := filepath.Join(cache, "mbot-ci", "kube-apiserver-"+KubeVersion)
	others, _ := filepath.Glob(filepath.Join(cache, "mbot-ci", "kube-apiserver-v*"))
	sort.Sort(sort.Reverse(sort.StringSlice(others)))
	for _, p := range append([]string{cached}, others...) {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("kube-apiserver"); err == nil {
		return p
	}
	missing(t, "kube-apiserver is not built: run .ci/build-kube-apiserver (or .ci/run), which builds it from the Go module proxy into "+
		cached+" (15 to 30 minutes the first time), or set MBOT_KUBE_APISERVER")
	return ""
}

// httpOK is a readiness check: GET url answers 200 with a body containing
// want.
func httpOK(ctx context.Context, c *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s %.200s", url, resp.Status, body)
	}
	return nil
}

// TokenKubeconfig writes a kubeconfig for a bearer token (such as one
// `kubectl create token` printed for a service account) that trusts the
// server's CA, with namespace as the context's, and returns its path.
func (k *KubeAPIServer) TokenKubeconfig(t testing.TB, user, token, namespace string) string {
	t.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: %[3]s
    namespace: %s
current-context: test
`, k.URL, base64.StdEncoding.EncodeToString(k.CAPEM), user, token, namespace)
	f, err := os.CreateTemp(k.Dir, "kubeconfig-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(cfg); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
