package client

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mbot-dev/mbot/identity"
)

func TestParseKubernetesOutput(t *testing.T) {
	cfg, err := ParseConfig("mbot.yaml", []byte("outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: prod\n    user: ci-deployer\n    groups: [deployers, \"system:viewers\"]\n  - type: kubernetes\n    destination: ./kube2\n    kubernetes_cluster: staging\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Outputs[0]
	if k.Type != OutputTypeKubernetes || k.KubernetesCluster != "prod" || k.KubernetesUser != "ci-deployer" || !slices.Equal(k.KubernetesGroups, []string{"deployers", "system:viewers"}) || k.Name != "kube" {
		t.Errorf("output %+v", k)
	}
	if k2 := cfg.Outputs[1]; k2.KubernetesCluster != "staging" || k2.KubernetesUser != "" || k2.KubernetesGroups != nil {
		t.Errorf("output %+v", k2)
	}
	wantConfigRefusals(t, []struct{ name, yaml, want string }{
		{"no cluster", "outputs:\n  - type: kubernetes\n    destination: ./kube\n", "mbot.yaml:2: outputs[0].kubernetes_cluster: is required"},
		{"bad cluster", "outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: \"a/b\"\n", "mbot.yaml:4: outputs[0].kubernetes_cluster:"},
		{"bad user", "outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: prod\n    user: \"a b\"\n", "mbot.yaml:5: outputs[0].user: user \"a b\" is not a Kubernetes user"},
		{"bad group", "outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: prod\n    groups: [\"a,b\"]\n", "mbot.yaml:5: outputs[0].groups: group \"a,b\" is not a Kubernetes user"},
		{"group twice", "outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: prod\n    groups: [a, a]\n", "outputs[0].groups: lists \"a\" twice"},
		{"empty groups", "outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: prod\n    groups: []\n", "outputs[0].groups: is empty"},
		{"kubernetes field on identity", "outputs:\n  - destination: ./id\n    kubernetes_cluster: prod\n", "mbot.yaml:3: outputs[0].kubernetes_cluster: belongs to outputs of type kubernetes, not identity"},
		{"kubernetes field on database", "outputs:\n  - type: database\n    destination: ./db\n    database: pg\n    username: ci\n    groups: [a]\n", "outputs[0].groups: belongs to outputs of type kubernetes, not database"},
		{"database field on kubernetes", "outputs:\n  - type: kubernetes\n    destination: ./kube\n    kubernetes_cluster: prod\n    username: ci\n", "outputs[0].username: belongs to outputs of type database, not kubernetes"},
	})
}

func TestKubernetesOutputKeys(t *testing.T) {
	outs := []Output{{Type: OutputTypeKubernetes, Name: "kube", KubernetesOutput: KubernetesOutput{KubernetesCluster: "prod", KubernetesUser: "u", KubernetesGroups: []string{"g"}}}}
	keys, reqs, err := newOutputKeys(outs)
	if err != nil {
		t.Fatal(err)
	}
	r := reqs[0]
	if keys[0].SSH != nil || keys[0].TLS == nil || r.SSHPublicKey != "" || r.TLSPublicKey == "" || r.Type != "kubernetes" || r.Database != nil ||
		r.Kubernetes == nil || r.Kubernetes.Cluster != "prod" || r.Kubernetes.User != "u" || !slices.Equal(r.Kubernetes.Groups, []string{"g"}) {
		t.Errorf("kubernetes output: keys %+v request %+v %+v", keys[0], r, r.Kubernetes)
	}
}

// signedSubject returns a CA PEM and a certificate on key with subject, signed by it.
func signedSubject(t *testing.T, key *ecdsa.PrivateKey, subject pkix.Name) (caPEM, certPEM string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: subject,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// renderKubernetes renders a kubernetes output for g with a certificate
// whose subject is subject (CN = g.User, O = g.Groups when nil).
func renderKubernetes(t *testing.T, g identity.KubernetesGrant, subject *pkix.Name) (map[string]identity.File, *identity.Keys, error) {
	t.Helper()
	keys, err := newKeys(kubernetesOutput{})
	if err != nil {
		t.Fatal(err)
	}
	if subject == nil {
		subject = &pkix.Name{CommonName: g.User, Organization: g.Groups}
	}
	caPEM, certPEM := signedSubject(t, keys.TLS, *subject)
	if g.CA == "" {
		g.CA = caPEM
	}
	resp := &identity.JoinResponse{ClusterName: "acme", Bot: "deployer"}
	grant := &identity.OutputResponse{Name: "kube", Type: "kubernetes", Roles: []string{"kube"}, TLSCertificate: certPEM, TLSSerial: "AB",
		NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Kubernetes: &g}
	files, err := kubernetesOutput{}.render("/ci/kube", keys, resp, grant)
	byName := map[string]identity.File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	return byName, keys, err
}

// TestRenderKubeconfig: the kubeconfig parses back (as YAML, and as
// kubectl reads it when kubectl is installed) to one cluster, user and
// context named after the cluster, the current context, the API server,
// its CA and the output's certificate and key embedded.
func TestRenderKubeconfig(t *testing.T) {
	g := identity.KubernetesGrant{Cluster: "prod", APIServer: "https://k8s.acme.internal:6443", User: "ci-deployer", Groups: []string{"deployers", "system:viewers"}}
	files, keys, err := renderKubernetes(t, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files["kubeconfig"].Mode != 0o600 || files["kubernetes.json"].Mode != 0o600 {
		t.Fatalf("files %v", slices.Collect(func(yield func(string) bool) {
			for n, f := range files {
				if !yield(n + " " + f.Mode.String()) {
					return
				}
			}
		}))
	}
	kc := files["kubeconfig"].Data
	var back struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Clusters   []struct {
			Name    string `yaml:"name"`
			Cluster struct {
				Server string `yaml:"server"`
				CAData string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			Name string `yaml:"name"`
			User struct {
				CertData string `yaml:"client-certificate-data"`
				KeyData  string `yaml:"client-key-data"`
			} `yaml:"user"`
		} `yaml:"users"`
		Contexts []struct {
			Name    string `yaml:"name"`
			Context struct {
				Cluster string `yaml:"cluster"`
				User    string `yaml:"user"`
			} `yaml:"context"`
		} `yaml:"contexts"`
		CurrentContext string `yaml:"current-context"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(kc))
	dec.KnownFields(true)
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("kubeconfig does not parse: %v\n%s", err, kc)
	}
	if back.APIVersion != "v1" || back.Kind != "Config" || back.CurrentContext != "prod" || len(back.Clusters) != 1 || len(back.Users) != 1 || len(back.Contexts) != 1 ||
		back.Clusters[0].Name != "prod" || back.Clusters[0].Cluster.Server != g.APIServer || back.Users[0].Name != "prod" ||
		back.Contexts[0].Name != "prod" || back.Contexts[0].Context.Cluster != "prod" || back.Contexts[0].Context.User != "prod" {
		t.Errorf("kubeconfig:\n%s", kc)
	}
	data := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("not base64: %v", err)
		}
		return b
	}
	certPEM, keyPEM := data(back.Users[0].User.CertData), data(back.Users[0].User.KeyData)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("the embedded certificate and key: %v", err)
	}
	if pub, ok := pair.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(keys.TLS.Public()) || pair.Leaf.Subject.CommonName != "ci-deployer" {
		t.Error("the embedded certificate is not the output's")
	}
	if err := checkPEMCertificates("CA", string(data(back.Clusters[0].Cluster.CAData))); err != nil {
		t.Error(err)
	}
	var sum KubernetesSummary
	if err := json.Unmarshal(files["kubernetes.json"].Data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.KubernetesCluster != "prod" || sum.User != "ci-deployer" || !slices.Equal(sum.Groups, g.Groups) || sum.Context != "prod" ||
		sum.APIServer != g.APIServer || sum.Files["kubeconfig"] != "kubeconfig" || sum.Bot != "deployer" || sum.Type != "kubernetes" {
		t.Errorf("kubernetes.json %+v", sum)
	}

	// kubectl, the consumer, reads it the same way.
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl is not installed; the kubeconfig was checked as YAML only")
		return
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubectl, "config", "view", "--raw", "--minify", "-o", "json", "--kubeconfig", path)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl config view: %v", err)
	}
	var view struct {
		Clusters []struct {
			Name    string `json:"name"`
			Cluster struct {
				Server string `json:"server"`
				CAData []byte `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				CertData []byte `json:"client-certificate-data"`
				KeyData  []byte `json:"client-key-data"`
			} `json:"user"`
		} `json:"users"`
		CurrentContext string `json:"current-context"`
	}
	if err := json.Unmarshal(out, &view); err != nil {
		t.Fatalf("kubectl config view: %v\n%s", err, out)
	}
	if view.CurrentContext != "prod" || len(view.Clusters) != 1 || view.Clusters[0].Cluster.Server != g.APIServer || len(view.Users) != 1 ||
		!bytes.Equal(view.Users[0].User.CertData, certPEM) || !bytes.Equal(view.Users[0].User.KeyData, keyPEM) || len(view.Clusters[0].Cluster.CAData) == 0 {
		t.Errorf("kubectl config view:\n%s", out)
	}
}

// TestRenderKubernetesRefusesBadAnswers: a value of the authority's answer
// that is not what a kubeconfig may hold, or a certificate that is not
// for the user and groups granted, is refused and nothing is rendered.
func TestRenderKubernetesRefusesBadAnswers(t *testing.T) {
	good := identity.KubernetesGrant{Cluster: "prod", APIServer: "https://k8s.acme.internal:6443", User: "ci-deployer", Groups: []string{"deployers"}}
	for _, tc := range []struct {
		name    string
		edit    func(g *identity.KubernetesGrant)
		subject *pkix.Name
	}{
		{"http server", func(g *identity.KubernetesGrant) { g.APIServer = "http://k8s.acme.internal" }, nil},
		{"server with a newline", func(g *identity.KubernetesGrant) { g.APIServer = "https://k8s.acme.internal\nusers: []" }, nil},
		{"server with credentials", func(g *identity.KubernetesGrant) { g.APIServer = "https://a:b@k8s.acme.internal" }, nil},
		{"cluster not a name", func(g *identity.KubernetesGrant) { g.Cluster = "prod\ncurrent-context: x" }, nil},
		{"user with a space", func(g *identity.KubernetesGrant) { g.User = "ci deployer" }, &pkix.Name{CommonName: "ci deployer", Organization: []string{"deployers"}}},
		{"group with a comma", func(g *identity.KubernetesGrant) { g.Groups = []string{"a,b"} }, &pkix.Name{CommonName: "ci-deployer", Organization: []string{"a,b"}}},
		{"CA not PEM", func(g *identity.KubernetesGrant) { g.CA = "hello" }, nil},
		{"certificate for another user", func(*identity.KubernetesGrant) {}, &pkix.Name{CommonName: "admin", Organization: []string{"deployers"}}},
		{"certificate with another group", func(*identity.KubernetesGrant) {}, &pkix.Name{CommonName: "ci-deployer", Organization: []string{"deployers", "system:masters"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := good
			tc.edit(&g)
			if files, _, err := renderKubernetes(t, g, tc.subject); err == nil {
				t.Errorf("rendered %d files", len(files))
			}
		})
	}
	if _, _, err := renderKubernetes(t, good, nil); err != nil {
		t.Errorf("the good answer: %v", err)
	}
}
