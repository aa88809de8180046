package client

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mbot-dev/mbot/identity"
)

// OutputTypeKubernetes writes a kubeconfig that kubectl, Helm and
// client-go use as is.
const OutputTypeKubernetes = "kubernetes"

// Files of a kubernetes output.
const (
	// FileKubeconfig holds the cluster, the user (its key and certificate
	// embedded) and the current context: one file to point KUBECONFIG or
	// --kubeconfig at, that still works when the directory is moved.
	FileKubeconfig     = "kubeconfig"
	FileKubernetesJSON = "kubernetes.json"
)

func init() {
	outputKinds[OutputTypeKubernetes] = kubernetesOutput{}
	identity.RegisterFiles(FileKubeconfig, FileKubernetesJSON)
}

// KubernetesOutput is what a kubernetes output asks for in mbot.yaml:
//
//   - type: kubernetes
//     destination: ./kube
//     kubernetes_cluster: prod  # a kind: kubernetes_cluster resource
//     user: ci-deployer         # optional when the roles grant one kubernetes_users
//     groups: [deployers]       # optional; default every kubernetes_groups granted
type KubernetesOutput struct {
	KubernetesCluster string   `yaml:"kubernetes_cluster"`
	KubernetesUser    string   `yaml:"user"`
	KubernetesGroups  []string `yaml:"groups"`
}

// CheckAndSetDefaults checks a kubernetes output's fields; the authority
// checks them again, and whether the bot's roles grant them.
func (k *KubernetesOutput) CheckAndSetDefaults() error {
	if k.KubernetesCluster == "" {
		return badField("kubernetes_cluster", "is required: the name of the kind: kubernetes_cluster resource to connect to (mbot get kubernetes_clusters lists them)")
	}
	if err := identity.CheckName("kubernetes_cluster", k.KubernetesCluster); err != nil {
		return badField("kubernetes_cluster", "%v", err)
	}
	if k.KubernetesUser != "" {
		if err := identity.CheckKubernetesName("user", k.KubernetesUser); err != nil {
			return badField("user", "%v", err)
		}
	}
	if k.KubernetesGroups != nil && len(k.KubernetesGroups) == 0 {
		return badField("groups", "is empty; list the groups to ask for, or leave groups: out for every group the roles grant")
	}
	if len(k.KubernetesGroups) > identity.MaxKubernetesGroups {
		return badField("groups", "lists %d groups; at most %d", len(k.KubernetesGroups), identity.MaxKubernetesGroups)
	}
	for i, g := range k.KubernetesGroups {
		if err := identity.CheckKubernetesName("group", g); err != nil {
			return badField("groups", "%v", err)
		}
		if slices.Contains(k.KubernetesGroups[:i], g) {
			return badField("groups", "lists %q twice", g)
		}
	}
	return nil
}

type kubernetesOutput struct{}

func (kubernetesOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (kubernetesOutput) setFields(o *Output) []string {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"kubernetes_cluster", o.KubernetesCluster != ""}, {"user", o.KubernetesUser != ""}, {"groups", o.KubernetesGroups != nil}} {
		if f.set {
			set = append(set, f.name)
		}
	}
	return set
}

func (kubernetesOutput) checkAndSetDefaults(o *Output) error {
	return o.KubernetesOutput.CheckAndSetDefaults()
}

func (kubernetesOutput) request(o *Output, req *identity.OutputRequest) {
	req.Kubernetes = &identity.KubernetesRequest{Cluster: o.KubernetesCluster, User: o.KubernetesUser, Groups: o.KubernetesGroups}
}

// KubernetesSummary is kubernetes.json: what a kubernetes output holds.
type KubernetesSummary struct {
	Cluster           string    `json:"cluster"`
	Bot               string    `json:"bot"`
	Output            string    `json:"output"`
	Type              string    `json:"type"`
	KubernetesCluster string    `json:"kubernetes_cluster"`
	APIServer         string    `json:"api_server"`
	User              string    `json:"user"`
	Groups            []string  `json:"groups"`
	Context           string    `json:"context"`
	Roles             []string  `json:"roles"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	Serial            string    `json:"serial"`
	// Files names each file written, by purpose.
	Files map[string]string `json:"files"`
}

// kubeconfig is the part of client-go's clientcmd v1 Config a kubernetes
// output writes. It is marshalled, never assembled from strings; the
// *-data fields hold base64, as client-go reads them.
type kubeconfig struct {
	APIVersion     string              `yaml:"apiVersion"`
	Kind           string              `yaml:"kind"`
	Clusters       []kubeconfigCluster `yaml:"clusters"`
	Users          []kubeconfigUser    `yaml:"users"`
	Contexts       []kubeconfigContext `yaml:"contexts"`
	CurrentContext string              `yaml:"current-context"`
}

type kubeconfigCluster struct {
	Name    string `yaml:"name"`
	Cluster struct {
		Server                   string `yaml:"server"`
		CertificateAuthorityData string `yaml:"certificate-authority-data"`
	} `yaml:"cluster"`
}

type kubeconfigUser struct {
	Name string `yaml:"name"`
	User struct {
		ClientCertificateData string `yaml:"client-certificate-data"`
		ClientKeyData         string `yaml:"client-key-data"`
	} `yaml:"user"`
}

type kubeconfigContext struct {
	Name    string `yaml:"name"`
	Context struct {
		Cluster string `yaml:"cluster"`
		User    string `yaml:"user"`
	} `yaml:"context"`
}

func (kubernetesOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	g := grant.Kubernetes
	if g == nil {
		return nil, errors.New("the authority's answer holds no kubernetes grant")
	}
	if err := checkKubernetesGrant(g); err != nil {
		return nil, fmt.Errorf("the authority's answer: %w", err)
	}
	if err := checkCertificate(grant.TLSCertificate, keys.TLS); err != nil {
		return nil, err
	}
	if err := checkKubernetesSubject(grant.TLSCertificate, g); err != nil {
		return nil, err
	}
	if err := checkPEMCertificates("API server CA", g.CA); err != nil {
		return nil, err
	}
	keyPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	// The cluster, user and context are named after the cluster resource,
	// as mbot get kubernetes_clusters lists it: with several kubeconfigs
	// merged (KUBECONFIG=a:b), kubectl --context <cluster> picks this one.
	name := g.Cluster
	cfg := kubeconfig{APIVersion: "v1", Kind: "Config", CurrentContext: name,
		Clusters: []kubeconfigCluster{{Name: name}}, Users: []kubeconfigUser{{Name: name}}, Contexts: []kubeconfigContext{{Name: name}}}
	cfg.Clusters[0].Cluster.Server = g.APIServer
	b64 := base64.StdEncoding.EncodeToString
	cfg.Clusters[0].Cluster.CertificateAuthorityData = b64([]byte(ensureNewline(g.CA)))
	cfg.Users[0].User.ClientCertificateData = b64([]byte(grant.TLSCertificate))
	cfg.Users[0].User.ClientKeyData = b64(keyPEM)
	cfg.Contexts[0].Context.Cluster, cfg.Contexts[0].Context.User = name, name
	data, err := yaml.Marshal(&cfg)
	if err != nil {
		return nil, err
	}
	sum := KubernetesSummary{Cluster: resp.ClusterName, Bot: resp.Bot, Output: grant.Name, Type: OutputTypeKubernetes,
		KubernetesCluster: g.Cluster, APIServer: g.APIServer, User: g.User, Groups: append([]string{}, g.Groups...), Context: name,
		Roles: grant.Roles, NotBefore: grant.NotBefore, NotAfter: grant.NotAfter, Serial: grant.TLSSerial,
		Files: map[string]string{"kubeconfig": FileKubeconfig}}
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return []identity.File{
		// It holds the private key.
		{Name: FileKubeconfig, Data: data, Mode: 0o600},
		{Name: FileKubernetesJSON, Data: append(sumJSON, '\n'), Mode: 0o600},
	}, nil
}

// checkKubernetesGrant checks every value of the authority's answer that
// reaches a file, as the authority checked them.
func checkKubernetesGrant(g *identity.KubernetesGrant) error {
	if err := identity.CheckName("kubernetes_cluster", g.Cluster); err != nil {
		return err
	}
	if err := checkAPIServerURL(g.APIServer); err != nil {
		return err
	}
	if err := identity.CheckKubernetesName("user", g.User); err != nil {
		return err
	}
	if len(g.Groups) > identity.MaxKubernetesGroups {
		return fmt.Errorf("%d groups; at most %d", len(g.Groups), identity.MaxKubernetesGroups)
	}
	for _, grp := range g.Groups {
		if err := identity.CheckKubernetesName("group", grp); err != nil {
			return err
		}
	}
	return nil
}

// checkAPIServerURL checks an API server URL as the authority's resources
// do: https://host[:port][/path], printable, nothing else.
func checkAPIServerURL(s string) error {
	u, err := url.Parse(s)
	bad := err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		len(s) > 1024 || identity.Printable(s) != s || strings.ContainsAny(s, " \"'\\")
	if !bad && net.ParseIP(u.Hostname()) == nil {
		bad = identity.CheckDNSPattern("api_server host", u.Hostname()) != nil || strings.HasPrefix(u.Hostname(), "*.")
	}
	if bad {
		return fmt.Errorf("api_server %s is not an https:// URL of an API server", identity.Quote(identity.Truncate(s, 64)))
	}
	return nil
}

// checkKubernetesSubject checks that the certificate authenticates as the
// grant says: CN = the user, O = the groups.
func checkKubernetesSubject(certPEM string, g *identity.KubernetesGrant) error {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return errors.New("the authority's answer holds no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("the authority's certificate does not parse: %w", err)
	}
	if cert.Subject.CommonName != g.User || !slices.Equal(slices.Sorted(slices.Values(cert.Subject.Organization)), slices.Sorted(slices.Values(g.Groups))) {
		return fmt.Errorf("the authority's certificate is for %s, not the user and groups it granted", identity.Printable(identity.Truncate(cert.Subject.String(), 120)))
	}
	return nil
}

// config is the type's own mbot.yaml fields.
func (kubernetesOutput) config() any { return KubernetesOutput{} }
