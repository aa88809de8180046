package authority_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
)

// kubernetesYAML: bot deployer gets kubernetes user ci-deployer through a
// trait and groups deployers and viewers from role kube; role ssh grants
// nothing Kubernetes; role kube-admin (not the bot's) grants
// system:masters. Bot multi has two users; bot plain none.
const kubernetesYAML = `kind: role
version: v1
metadata: {name: kube}
spec:
  kubernetes_users: ["{{internal.kube_user}}"]
  kubernetes_groups: [deployers, viewers]
---
kind: role
version: v1
metadata: {name: ssh}
spec:
  logins: [deploy]
---
kind: role
version: v1
metadata: {name: kube-admin}
spec:
  kubernetes_users: [admin]
  kubernetes_groups: ["system:masters"]
---
kind: role
version: v1
metadata: {name: kube-two}
spec:
  kubernetes_users: [alice, bob]
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [kube, ssh]
  traits: {kube_user: [ci-deployer]}
---
kind: bot
version: v1
metadata: {name: multi}
spec:
  roles: [kube-two]
---
kind: bot
version: v1
metadata: {name: plain}
spec:
  roles: [ssh]
---
kind: kubernetes_cluster
version: v1
metadata: {name: prod}
spec:
  api_server: https://k8s.acme.internal:6443
  ca: |
CAPEM
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github: {issuer: ISSUER, allow: [{repository: acme/app}]}
---
kind: join_token
version: v1
metadata: {name: github-multi}
spec:
  bot: multi
  method: github
  github: {issuer: ISSUER, allow: [{repository: acme/app}]}
---
kind: join_token
version: v1
metadata: {name: github-plain}
spec:
  bot: plain
  method: github
  github: {issuer: ISSUER, allow: [{repository: acme/app}]}
`

// testCAPEM is a self-signed CA certificate, as an API server's serving CA.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

func openKubernetesAuthority(t *testing.T) (*authority.Authority, *simci.Issuer, string) {
	t.Helper()
	caPEM := testCAPEM(t)
	a, ci := openAuthorityFrom(t, strings.ReplaceAll(kubernetesYAML, "CAPEM", "    "+strings.ReplaceAll(caPEM, "\n", "\n    ")))
	return a, ci, caPEM
}

func kubernetesOutput(t *testing.T, name, cluster, user string, groups []string, roles ...string) output {
	t.Helper()
	return tlsOutput(t, identity.OutputRequest{Name: name, Type: identity.OutputKubernetes, Roles: roles,
		Kubernetes: &identity.KubernetesRequest{Cluster: cluster, User: user, Groups: groups}})
}

// TestKubernetesOutput: a kubernetes output gets a client certificate with
// CN = the user and O = the groups (all granted, or those asked), under
// the kubernetes-client CA only, for client authentication only, with the
// API server's URL and CA; the audit record says what was granted.
func TestKubernetesOutput(t *testing.T) {
	a, ci, caPEM := openKubernetesAuthority(t)
	cas := a.CAs()
	for _, tc := range []struct {
		name       string
		user       string
		groups     []string
		wantGroups []string
		wantAudit  string
	}{
		{"defaults", "", nil, []string{"deployers", "viewers"}, "kube type=kubernetes kubernetes_cluster=prod user=ci-deployer groups=deployers,viewers"},
		{"asked", "ci-deployer", []string{"viewers"}, []string{"viewers"}, "kube type=kubernetes kubernetes_cluster=prod user=ci-deployer groups=viewers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube := kubernetesOutput(t, "kube", "prod", tc.user, tc.groups)
			resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), 2*time.Hour, newOutput(t, "id"), kube), "test")
			if err != nil {
				t.Fatal(err)
			}
			got := resp.Outputs[1]
			g := got.Kubernetes
			if got.Type != identity.OutputKubernetes || g == nil || g.Cluster != "prod" || g.APIServer != "https://k8s.acme.internal:6443" ||
				g.CA != caPEM+"\n" || g.User != "ci-deployer" || !slices.Equal(g.Groups, tc.wantGroups) {
				t.Fatalf("kubernetes output %+v %+v", got, g)
			}
			if got.SSHCertificate != "" || len(got.Logins) != 0 || got.Database != nil {
				t.Errorf("a kubernetes output carries other material: %+v", got)
			}
			cert := parseCertPEM(t, got.TLSCertificate)
			// One O per group (DER orders a multi-valued RDN's values).
			if cert.Subject.CommonName != "ci-deployer" || !slices.Equal(slices.Sorted(slices.Values(cert.Subject.Organization)), tc.wantGroups) ||
				len(cert.Subject.OrganizationalUnit)+len(cert.Subject.Country)+len(cert.Subject.Locality) != 0 {
				t.Errorf("subject %q, want CN=ci-deployer, O=%v", cert.Subject, tc.wantGroups)
			}
			if len(cert.URIs)+len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
				t.Errorf("SANs %v %v %v: want none", cert.URIs, cert.DNSNames, cert.IPAddresses)
			}
			checkClientCert(t, cert, cas, kube.keys.TLS.Public(), "kubernetes-client")
			// The identity output's certificate is not the kubernetes-client CA's.
			roots := x509.NewCertPool()
			roots.AddCert(cas.KubernetesClient.Cert)
			if _, err := parseCertPEM(t, resp.Outputs[0].TLSCertificate).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
				t.Error("the identity output's tls.crt verifies under the kubernetes-client CA")
			}
			ev := lastAudit(t, a)
			if !ev.Allowed || len(ev.Outputs) != 2 || ev.Outputs[1] != tc.wantAudit {
				t.Errorf("audit outputs %q, want %q", ev.Outputs, tc.wantAudit)
			}
			if !strings.Contains(strings.Join(ev.Serials, " "), "tls:"+got.TLSSerial) {
				t.Errorf("audit serials %q lack the kubernetes certificate's", ev.Serials)
			}
		})
	}
	t.Run("one of several users", func(t *testing.T) {
		resp, err := a.Join(t.Context(), joinRequest("github-multi", "github", githubToken(t, ci, nil), time.Hour, kubernetesOutput(t, "kube", "prod", "bob", nil)), "test")
		if err != nil {
			t.Fatal(err)
		}
		cert := parseCertPEM(t, resp.Outputs[0].TLSCertificate)
		if g := resp.Outputs[0].Kubernetes; g.User != "bob" || len(g.Groups) != 0 || cert.Subject.String() != "CN=bob" {
			t.Errorf("grant %+v, subject %q: want bob without groups", g, cert.Subject)
		}
	})
}

// TestKubernetesRefusals: an unknown cluster, no user or a user or group
// no role grants, several users and none asked: refused with a stable
// code, a message naming what to grant, an audit record; the proof stays
// usable.
func TestKubernetesRefusals(t *testing.T) {
	a, ci, _ := openKubernetesAuthority(t)
	for _, tc := range []struct {
		name  string
		token string
		out   func(t *testing.T) output
		code  identity.ErrorCode
		want  string
	}{
		{"unknown cluster", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "staging", "", nil) },
			identity.CodeBadRequest, `there is no kubernetes_cluster named "staging" on this authority (existing: prod)`},
		{"user no role grants", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "root", nil) },
			identity.CodeRoleDenied, `no role of bot "deployer" grants Kubernetes user "root"; add it to the kubernetes_users of one of its roles (kube, ssh)`},
		{"user another role grants", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "admin", nil) },
			identity.CodeRoleDenied, `role kube-admin would grant it: add it to the bot's spec.roles`},
		{"group another role grants", "github-deploy", func(t *testing.T) output {
			return kubernetesOutput(t, "kube", "prod", "", []string{"deployers", "system:masters"})
		}, identity.CodeRoleDenied, `grants Kubernetes group "system:masters"; role kube-admin would grant it`},
		{"group no role grants", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "", []string{"ops"}) },
			identity.CodeRoleDenied, `grants Kubernetes group "ops"; add it to the kubernetes_groups of one of its roles (kube, ssh)`},
		{"user of a role the output leaves out", "github-deploy", func(t *testing.T) output {
			return kubernetesOutput(t, "kube", "prod", "ci-deployer", nil, "ssh")
		}, identity.CodeRoleDenied, `Kubernetes user "ci-deployer" is granted by role kube of bot "deployer", which this output does not use`},
		{"no user from the roles used", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "", nil, "ssh") },
			identity.CodeRoleDenied, `Kubernetes users are granted by role kube of bot "deployer", which this output does not use`},
		{"no user granted", "github-plain", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "", nil) },
			identity.CodeRoleDenied, `no role of bot "plain" grants a Kubernetes user; add one to the kubernetes_users of one of its roles (ssh)`},
		{"several users, none asked", "github-multi", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "", nil) },
			identity.CodeBadRequest, `several Kubernetes users (alice, bob); set user:`},
		{"no kubernetes request", "github-deploy", func(t *testing.T) output {
			o := kubernetesOutput(t, "kube", "prod", "", nil)
			o.req.Kubernetes = nil
			return o
		}, identity.CodeBadRequest, "names no cluster"},
		{"bad user", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "a b", nil) },
			identity.CodeBadRequest, `user "a b" is not a Kubernetes user or group`},
		{"bad group", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "prod", "", []string{"a,b"}) },
			identity.CodeBadRequest, `group "a,b" is not a Kubernetes user or group`},
		{"group twice", "github-deploy", func(t *testing.T) output {
			return kubernetesOutput(t, "kube", "prod", "", []string{"viewers", "viewers"})
		}, identity.CodeBadRequest, `asks for Kubernetes group "viewers" twice`},
		{"bad cluster name", "github-deploy", func(t *testing.T) output { return kubernetesOutput(t, "kube", "../prod", "", nil) },
			identity.CodeBadRequest, "kubernetes_cluster"},
		{"an SSH key", "github-deploy", func(t *testing.T) output {
			o := kubernetesOutput(t, "kube", "prod", "", nil)
			o.req.SSHPublicKey = o.keys.SSHPublicKey()
			return o
		}, identity.CodeBadRequest, "a kubernetes output certifies no SSH key"},
		{"a database request", "github-deploy", func(t *testing.T) output {
			o := kubernetesOutput(t, "kube", "prod", "", nil)
			o.req.Database = &identity.DatabaseRequest{Database: "prod", Username: "x"}
			return o
		}, identity.CodeBadRequest, "carries a database request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proof := githubToken(t, ci, nil)
			_, err := a.Join(t.Context(), joinRequest(tc.token, "github", proof, time.Hour, tc.out(t)), "test")
			var ierr *identity.Error
			if !errors.As(err, &ierr) || ierr.Code != tc.code || !strings.Contains(ierr.Message, tc.want) {
				t.Fatalf("err = %v, want %s saying %q", err, tc.code, tc.want)
			}
			if ierr.Code.HTTPStatus() >= 500 {
				t.Errorf("status %d", ierr.Code.HTTPStatus())
			}
			ev := lastAudit(t, a)
			if ev.Allowed || ev.Code != string(tc.code) || len(ev.Outputs) != 0 || len(ev.Serials) != 0 {
				t.Errorf("audit record %+v", ev)
			}
			good := kubernetesOutput(t, "kube", "prod", "", nil)
			if tc.token == "github-multi" {
				good = kubernetesOutput(t, "kube", "prod", "alice", nil)
			}
			if tc.token == "github-plain" {
				good = newOutput(t, "id")
			}
			if _, err := a.Join(t.Context(), joinRequest(tc.token, "github", proof, time.Hour, good), "test"); err != nil {
				t.Errorf("the refusal consumed the proof: %v", err)
			}
		})
	}
}
