package resources

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mbot-dev/mbot/identity"
)

// Kinds of the resources that name what outputs connect to (SPEC §7).
const (
	KindDatabase          = "database"
	KindKubernetesCluster = "kubernetes_cluster"
)

// Database protocols.
const (
	ProtocolPostgres = "postgres"
	ProtocolMySQL    = "mysql"
)

// maxCABytes bounds a CA bundle in a resource.
const maxCABytes = 64 << 10

// DatabaseSpec names a database server that database outputs connect to.
type DatabaseSpec struct {
	// Protocol is postgres (PostgreSQL) or mysql (MySQL, MariaDB).
	Protocol string `yaml:"protocol" json:"protocol"`
	// URI is the server's host:port, as clients dial it and as its
	// certificate names it (sslmode=verify-full, ssl-mode=VERIFY_IDENTITY).
	URI string `yaml:"uri" json:"uri"`
	// CA is the PEM bundle of the CA that signed the server's certificate.
	CA string `yaml:"ca,omitempty" json:"ca,omitempty"`
	// CAIssuedByAuthority says the server's certificate comes from mbot sign
	// --format postgres|mysql: outputs check it by the authority's
	// database-server CA. Exactly one of ca and ca_issued_by_authority is set.
	CAIssuedByAuthority bool `yaml:"ca_issued_by_authority,omitempty" json:"ca_issued_by_authority,omitempty"`
}

// HostPort splits URI; it was checked when the resource was read.
func (s *DatabaseSpec) HostPort() (host string, port int) {
	h, p, _ := net.SplitHostPort(s.URI)
	port, _ = strconv.Atoi(p)
	return h, port
}

// KubernetesClusterSpec names a Kubernetes API server that kubernetes outputs connect to.
type KubernetesClusterSpec struct {
	// APIServer is the API server's https:// URL.
	APIServer string `yaml:"api_server" json:"api_server"`
	// CA is the PEM bundle of the CA that signed the API server's certificate.
	CA string `yaml:"ca" json:"ca"`
}

// Database and KubernetesCluster are the two target resource kinds.
type Database struct {
	Metadata Metadata
	Spec     DatabaseSpec
	Source   Source
}

type KubernetesCluster struct {
	Metadata Metadata
	Spec     KubernetesClusterSpec
	Source   Source
}

// Document returns the database as written.
func (d *Database) Document() Document {
	return Document{Kind: KindDatabase, Version: "v1", Metadata: d.Metadata, Spec: d.Spec}
}

// Document returns the Kubernetes cluster as written.
func (k *KubernetesCluster) Document() Document {
	return Document{Kind: KindKubernetesCluster, Version: "v1", Metadata: k.Metadata, Spec: k.Spec}
}

func checkDatabase(root *yaml.Node, spec *DatabaseSpec, fail nodeFail) error {
	spec.CA = strings.TrimSpace(spec.CA)
	switch spec.Protocol {
	case ProtocolPostgres, ProtocolMySQL:
	case "":
		return fail(Lookup(root, "spec"), "spec.protocol is required: postgres (PostgreSQL) or mysql (MySQL, MariaDB)")
	default:
		return fail(Lookup(root, "spec", "protocol"), "spec.protocol %s is not postgres or mysql", identity.Quote(identity.Truncate(spec.Protocol, 64)))
	}
	if err := CheckHostPort("spec.uri", spec.URI); err != nil {
		return fail(orSpec(root, "uri"), "%v", err)
	}
	switch {
	case spec.CA != "" && spec.CAIssuedByAuthority:
		return fail(Lookup(root, "spec", "ca"), "spec.ca and spec.ca_issued_by_authority are both set; keep ca when another CA signed the server's certificate, or ca_issued_by_authority: true when mbot sign --format %s did", spec.Protocol)
	case spec.CA == "" && !spec.CAIssuedByAuthority:
		return fail(Lookup(root, "spec"), "spec.ca is required: the PEM of the CA that signed the server's certificate, or set ca_issued_by_authority: true when it comes from mbot sign --format %s", spec.Protocol)
	case spec.CA != "":
		if err := CheckCABundle("spec.ca", spec.CA); err != nil {
			return fail(Lookup(root, "spec", "ca"), "%v", err)
		}
	}
	return nil
}

func checkKubernetesCluster(root *yaml.Node, spec *KubernetesClusterSpec, fail nodeFail) error {
	spec.CA = strings.TrimSpace(spec.CA)
	if err := CheckAPIServerURL("spec.api_server", spec.APIServer); err != nil {
		return fail(orSpec(root, "api_server"), "%v", err)
	}
	if spec.CA == "" {
		return fail(Lookup(root, "spec"), "spec.ca is required: the PEM of the CA that signed the API server's certificate (kubectl config view --raw shows it as certificate-authority-data)")
	}
	if err := CheckCABundle("spec.ca", spec.CA); err != nil {
		return fail(Lookup(root, "spec", "ca"), "%v", err)
	}
	return nil
}

func orSpec(root *yaml.Node, field string) *yaml.Node {
	if n := Lookup(root, "spec", field); n != nil {
		return n
	}
	return Lookup(root, "spec")
}

// CheckHostPort checks host:port: a DNS name or IP address and a port 1-65535.
func CheckHostPort(what, hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil || host == "" {
		return fmt.Errorf("%s %s is not host:port (db.example.com:5432, 10.0.0.5:3306, [::1]:5432)", what, identity.Quote(identity.Truncate(hp, 64)))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("%s %s: the port must be a number from 1 to 65535", what, identity.Quote(identity.Truncate(hp, 64)))
	}
	if net.ParseIP(host) == nil {
		if err := identity.CheckDNSPattern(what+" host", host); err != nil || strings.HasPrefix(host, "*.") {
			return fmt.Errorf("%s %s: the host must be a DNS name (no wildcard) or an IP address", what, identity.Quote(identity.Truncate(hp, 64)))
		}
	}
	return nil
}

// CheckAPIServerURL checks a Kubernetes API server URL: https://host[:port][/path].
func CheckAPIServerURL(what, s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || len(s) > 1024 {
		return fmt.Errorf("%s %s is not an https:// URL of an API server (https://k8s.example.com:6443)", what, identity.Quote(identity.Truncate(s, 64)))
	}
	hp := u.Host
	if u.Port() == "" {
		hp = net.JoinHostPort(u.Hostname(), "443")
	}
	if err := CheckHostPort(what, hp); err != nil {
		return err
	}
	if strings.ContainsFunc(u.Path, notPrintable) || strings.ContainsAny(u.Path, " \"'\\") {
		return fmt.Errorf("%s %s: the path has a character a kubeconfig cannot hold", what, identity.Quote(identity.Truncate(s, 64)))
	}
	return nil
}

// CheckCABundle checks a PEM bundle of one or more CA certificates.
func CheckCABundle(what, bundle string) error {
	if len(bundle) > maxCABytes {
		return fmt.Errorf("%s is %d bytes; a CA bundle is at most %d", what, len(bundle), maxCABytes)
	}
	n := 0
	rest := []byte(bundle)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("%s holds a %s block; put only CERTIFICATE blocks (never a key) in it", what, identity.Quote(identity.Truncate(block.Type, 40)))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("%s: certificate %d does not parse: %s", what, n+1, identity.Quote(identity.Truncate(err.Error(), 120)))
		}
		if !cert.IsCA {
			return fmt.Errorf("%s: certificate %d (%s) is not a CA certificate; give the CA that signed the server's certificate", what, n+1, identity.Printable(identity.Truncate(cert.Subject.String(), 120)))
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return errors.New(what + " must be PEM CERTIFICATE blocks and nothing else")
	}
	return nil
}
