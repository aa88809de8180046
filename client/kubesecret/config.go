// Package kubesecret writes an output into a Kubernetes Secret: one write
// of the whole Secret with its resourceVersion, retried on a conflict,
// authenticated as the pod's service account in a cluster or as a
// kubeconfig's user outside one.
//
// It talks to the API server with net/http and encoding/json rather than
// client-go: the four calls it makes (get, create and update a Secret, a
// SelfSubjectAccessReview) are small documented JSON objects, and client-go
// with its scheme and typed clients would add megabytes to a binary whose
// size and start time are capped (see docs/kubernetes-deployment.md for
// the figures). The authority's TokenReview (authority/verify) does the same.
package kubesecret

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Where the kubelet mounts a pod's service account (in-cluster config).
// Variables so that tests can point them at files of their own.
var (
	InClusterTokenFile     = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	InClusterCAFile        = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	InClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)

// Env reads an environment variable (os.Getenv, or a job's environment).
type Env func(string) string

// Config says how to reach the API server and as whom.
type Config struct {
	// Server is https://host[:port].
	Server string
	// Namespace is the default namespace: the pod's, or the kubeconfig
	// context's (else "default").
	Namespace string
	// Source says where the settings came from, for messages: "the pod's
	// service account" or "kubeconfig <path> (user <name>)".
	Source string

	roots      *x509.CertPool
	clientCert *tls.Certificate
	token      string
	tokenFile  string // read on every request: the kubelet rotates it
}

// Load picks the configuration the way kubectl and client-go do: a
// kubeconfig named by $KUBECONFIG; else the pod's service account when
// running in a cluster (KUBERNETES_SERVICE_HOST and a token mounted);
// else ~/.kube/config.
func Load(env Env) (*Config, error) {
	if path := env("KUBECONFIG"); path != "" {
		// kubectl merges a list; mbot reads the first file.
		first, _, _ := strings.Cut(path, string(os.PathListSeparator))
		return FromKubeconfig(first)
	}
	if env("KUBERNETES_SERVICE_HOST") != "" {
		if _, err := os.Stat(InClusterTokenFile); err == nil {
			return InCluster(env)
		}
	}
	home := env("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	path := filepath.Join(home, ".kube", "config")
	if _, err := os.Stat(path); err != nil {
		return nil, errors.New("no Kubernetes API server to write the Secret to: not in a pod (KUBERNETES_SERVICE_HOST is unset or no service account token is mounted), " +
			"KUBECONFIG is unset and there is no " + path + "; run mbot in a pod with a service account, or set KUBECONFIG")
	}
	return FromKubeconfig(path)
}

// InCluster is the pod's service account: its token and the cluster's CA
// where the kubelet mounts them, the API server from
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
func InCluster(env Env) (*Config, error) {
	host, port := env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")
	if host == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST is unset: not running in a pod")
	}
	if port == "" {
		port = "443"
	}
	c := &Config{Server: "https://" + net.JoinHostPort(host, port), tokenFile: InClusterTokenFile, Source: "the pod's service account"}
	if _, err := c.bearer(); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(InClusterCAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's CA: %w", err)
	}
	if c.roots, err = certPool(ca, InClusterCAFile); err != nil {
		return nil, err
	}
	ns, err := os.ReadFile(InClusterNamespaceFile)
	if err != nil {
		return nil, fmt.Errorf("reading the pod's namespace: %w", err)
	}
	c.Namespace = strings.TrimSpace(string(ns))
	return c, nil
}

// kubeconfig is the part of a kubeconfig file mbot reads.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server                   string `yaml:"server"`
			CertificateAuthority     string `yaml:"certificate-authority"`
			CertificateAuthorityData string `yaml:"certificate-authority-data"`
			InsecureSkipTLSVerify    bool   `yaml:"insecure-skip-tls-verify"`
			ProxyURL                 string `yaml:"proxy-url"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			Token                 string    `yaml:"token"`
			TokenFile             string    `yaml:"tokenFile"`
			ClientCertificate     string    `yaml:"client-certificate"`
			ClientCertificateData string    `yaml:"client-certificate-data"`
			ClientKey             string    `yaml:"client-key"`
			ClientKeyData         string    `yaml:"client-key-data"`
			Exec                  yaml.Node `yaml:"exec"`
			AuthProvider          yaml.Node `yaml:"auth-provider"`
			Username              string    `yaml:"username"`
		} `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster   string `yaml:"cluster"`
			User      string `yaml:"user"`
			Namespace string `yaml:"namespace"`
		} `yaml:"context"`
	} `yaml:"contexts"`
}

// FromKubeconfig reads the current context of a kubeconfig file: its
// cluster's server and CA, and its user's token, token file or client
// certificate. Exec plugins and auth providers are not run.
func FromKubeconfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("kubeconfig %s: %s", path, fmt.Sprintf(format, args...))
	}
	if kc.CurrentContext == "" {
		return nil, fail("has no current-context; run kubectl config use-context")
	}
	ctxIdx := -1
	for i, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			ctxIdx = i
		}
	}
	if ctxIdx < 0 {
		return nil, fail("current-context %q is not among its contexts", kc.CurrentContext)
	}
	kctx := kc.Contexts[ctxIdx].Context
	c := &Config{Namespace: kctx.Namespace, Source: fmt.Sprintf("kubeconfig %s (user %s)", path, kctx.User)}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	rel := func(p string) string { // paths in a kubeconfig are relative to it
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	found := false
	for _, cl := range kc.Clusters {
		if cl.Name != kctx.Cluster {
			continue
		}
		found = true
		s := cl.Cluster
		u, err := url.Parse(s.Server)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fail("cluster %s: server %q is not an https:// URL; mbot sends the Secret's keys only over verified TLS", cl.Name, s.Server)
		}
		if s.InsecureSkipTLSVerify {
			return nil, fail("cluster %s sets insecure-skip-tls-verify; mbot sends private keys only to an API server whose certificate it verifies: set certificate-authority-data", cl.Name)
		}
		if s.ProxyURL != "" {
			return nil, fail("cluster %s sets proxy-url, which mbot does not use; remove it or use a kubeconfig without it", cl.Name)
		}
		c.Server = strings.TrimRight(s.Server, "/")
		switch {
		case s.CertificateAuthorityData != "":
			pem, err := base64.StdEncoding.DecodeString(s.CertificateAuthorityData)
			if err != nil {
				return nil, fail("cluster %s: certificate-authority-data is not base64: %v", cl.Name, err)
			}
			if c.roots, err = certPool(pem, "certificate-authority-data"); err != nil {
				return nil, fail("cluster %s: %v", cl.Name, err)
			}
		case s.CertificateAuthority != "":
			pem, err := os.ReadFile(rel(s.CertificateAuthority))
			if err != nil {
				return nil, fail("cluster %s: %v", cl.Name, err)
			}
			if c.roots, err = certPool(pem, rel(s.CertificateAuthority)); err != nil {
				return nil, fail("cluster %s: %v", cl.Name, err)
			}
		}
	}
	if !found {
		return nil, fail("context %s names cluster %q, which it does not list", kc.CurrentContext, kctx.Cluster)
	}
	found = false
	for _, us := range kc.Users {
		if us.Name != kctx.User {
			continue
		}
		found = true
		u := us.User
		switch {
		case u.Exec.Kind != 0 || u.AuthProvider.Kind != 0:
			return nil, fail("user %s authenticates with an exec plugin or auth provider, which mbot does not run; use a user with a token, tokenFile or client certificate "+
				"(in a pod, leave KUBECONFIG unset to use the pod's service account)", us.Name)
		case u.Token != "":
			c.token = u.Token
		case u.TokenFile != "":
			c.tokenFile = rel(u.TokenFile)
		case u.ClientCertificate != "" || u.ClientCertificateData != "":
			certPEM, keyPEM := []byte(nil), []byte(nil)
			var err error
			if u.ClientCertificateData != "" {
				certPEM, err = base64.StdEncoding.DecodeString(u.ClientCertificateData)
			} else {
				certPEM, err = os.ReadFile(rel(u.ClientCertificate))
			}
			if err != nil {
				return nil, fail("user %s: client certificate: %v", us.Name, err)
			}
			if u.ClientKeyData != "" {
				keyPEM, err = base64.StdEncoding.DecodeString(u.ClientKeyData)
			} else {
				keyPEM, err = os.ReadFile(rel(u.ClientKey))
			}
			if err != nil {
				return nil, fail("user %s: client key: %v", us.Name, err)
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				return nil, fail("user %s: %v", us.Name, err)
			}
			c.clientCert = &pair
		default:
			return nil, fail("user %s has no token, tokenFile or client certificate", us.Name)
		}
	}
	if !found {
		return nil, fail("context %s names user %q, which it does not list", kc.CurrentContext, kctx.User)
	}
	return c, nil
}

func certPool(pemData []byte, from string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s holds no PEM certificate", from)
	}
	return pool, nil
}

// bearer is the token to send, if any.
func (c *Config) bearer() (string, error) {
	if c.tokenFile == "" {
		return c.token, nil
	}
	data, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the service account token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("the service account token %s is empty", c.tokenFile)
	}
	return tok, nil
}

// httpClient trusts the configured CA (the system's when none is given)
// and presents the client certificate, if any.
func (c *Config) httpClient() *http.Client {
	t := &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12}
	if c.clientCert != nil {
		t.Certificates = []tls.Certificate{*c.clientCert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: t, Proxy: http.ProxyFromEnvironment,
		ForceAttemptHTTP2: true, IdleConnTimeout: 30 * time.Second}}
}
