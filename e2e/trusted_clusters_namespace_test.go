//go:build linux

package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// leafOwnDeployerYAML: the leaf's own bot deployer, joining the leaf by
// GitHub, and role shared, which it holds and which the root's deploy
// maps to as well. Its templates grant each identity its own login and
// SPIFFE ID: the leaf's bots ci-leaf-eu, root bots ci-<root> and
// /mbot/cluster/<root>/bot/*. /bot/deployer, granted literally, is the
// leaf's own deployer's alone: the exchanged deployer cannot hold it.
const leafOwnDeployerYAML = `kind: role
version: v1
metadata: {name: shared}
spec:
  logins: ["ci-{{mbot.cluster}}"]
  spiffe_ids: [/bot/deployer, "/mbot/cluster/{{mbot.root_cluster}}/bot/*"]
  jwt_audiences: [vault]
---
kind: bot
version: v1
metadata: {name: deployer}
spec: {roles: [shared]}
---
kind: join_token
version: v1
metadata: {name: github-deployer}
spec:
  bot: deployer
  method: github
  github:
    issuer: %s
    allow: [{repository: acme/app}]
---
`

// namespaceOutputs are an identity, an application and a
// workload-identity-jwt output under dir, of cluster (none: the authority
// joined), each with role shared and the default SPIFFE ID.
func namespaceOutputs(dir, cluster string) string {
	var out strings.Builder
	for _, o := range []string{"type: identity", "type: application", "type: workload-identity-jwt, audiences: [vault]"} {
		typ := strings.TrimSuffix(strings.Fields(o)[1], ",")
		fmt.Fprintf(&out, "  - {%s, destination: %s, roles: [shared]", o, filepath.Join(dir, typ))
		if cluster != "" {
			fmt.Fprintf(&out, ", cluster: %s", cluster)
		}
		out.WriteString("}\n")
	}
	return out.String()
}

// TestTrustedClustersExchangedNamespace (issue 18 item 2): the leaf's own
// bot deployer and the root's bot deployer exchanged into the leaf, with
// the same outputs and the same leaf role, are told apart by every relying
// party of the leaf: their URI SANs, X.509 subjects, X.509-SVIDs and
// JWT-SVID subs differ (the exchanged ones under the root's name); a
// go-spiffe server authorizing the own bot's SPIFFE ID and a JWT-SVID
// check by go-spiffe admit the own bot's and refuse the exchanged ones;
// and an sshd whose AuthorizedPrincipalsFile lists the own bot's principal
// (ci-leaf-eu, from the role's {{mbot.cluster}}) admits one and not the other.
func TestTrustedClustersExchangedNamespace(t *testing.T) {
	tc := startTrustedClusters(t, func(c *cluster) string { return fmt.Sprintf(leafOwnDeployerYAML, c.ci.URL) })
	// The root's deploy maps to shared as well.
	tcPath := filepath.Join(t.TempDir(), "tc.yaml")
	writeFile(t, tcPath, strings.Replace(fmt.Sprintf(trustedClusterYAML, "https://"+tc.proxy.Addr, tc.root.pin, true),
		"local: [leaf-deploy]", "local: [leaf-deploy, shared]", 1), 0o600)
	mustMbot(t, baseEnv(tc.leaf.home), "apply", "-f", tcPath, "--config", tc.leaf.config)
	time.Sleep(300 * time.Millisecond) // the running leaf reads resources changed by others every 250ms

	// The leaf's own deployer joins the leaf.
	own := t.TempDir()
	config := filepath.Join(own, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\nttl: 1h\noutputs:\n%s", tc.leaf.url, tc.leaf.pin, tokenDeployer,
		namespaceOutputs(own, "")), 0o600)
	if res := mbot(t, tc.leaf.jobEnv(gitHubJob(t, tc.leaf)), "issue", "--config", config); res.code != 0 {
		t.Fatalf("mbot issue of the leaf's own deployer: %s\nleaf:\n%s", res, tc.leafAuth.logs)
	}
	// The root's deployer joins the root and exchanges into the leaf.
	exch := t.TempDir()
	if res := tc.issue(t, tc.mbotYAML(t, exch, "", namespaceOutputs(exch, leafName)), tokenDeployer); res.code != 0 {
		t.Fatalf("mbot issue of the root's deployer with leaf outputs: %s\nleaf:\n%s", res, tc.leafAuth.logs)
	}

	ownID := "spiffe://" + leafName + "/bot/deployer"
	exchID := "spiffe://" + leafName + "/mbot/cluster/" + clusterName + "/bot/deployer"
	t.Run("x509-subject-and-uri", func(t *testing.T) {
		for _, c := range []struct{ dir, uri, cn, o string }{
			{own, ownID, "deployer", leafName},
			{exch, exchID, clusterName + "/deployer", "mbot-root:" + clusterName},
		} {
			cert := parseCertChain(t, filepath.Join(c.dir, "identity", "tls.crt"))[0]
			if len(cert.URIs) != 1 || cert.URIs[0].String() != c.uri {
				t.Errorf("%s/identity/tls.crt URI SANs %v, want %s", c.dir, cert.URIs, c.uri)
			}
			if cert.Subject.CommonName != c.cn || !slices.Equal(cert.Subject.Organization, []string{c.o}) {
				t.Errorf("%s/identity/tls.crt subject %s, want CN=%s, O=%s", c.dir, cert.Subject, c.cn, c.o)
			}
		}
		if id := parseSSHCert(t, filepath.Join(exch, "identity", "key-cert.pub")).KeyId; !strings.HasPrefix(id, "bot="+clusterName+"/deployer cluster="+clusterName+" ") {
			t.Errorf("the exchanged SSH certificate's key ID %q does not name the root", id)
		}
	})

	t.Run("go-spiffe-x509", func(t *testing.T) {
		ownSVID, err := x509svid.Load(filepath.Join(own, "application", "svid.pem"), filepath.Join(own, "application", "svid_key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		exchSVID, err := x509svid.Load(filepath.Join(exch, "application", "svid.pem"), filepath.Join(exch, "application", "svid_key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if ownSVID.ID.String() != ownID || exchSVID.ID.String() != exchID {
			t.Errorf("X.509-SVIDs %s and %s, want %s and %s", ownSVID.ID, exchSVID.ID, ownID, exchID)
		}
		bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(leafName), filepath.Join(own, "application", "svid_bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		// A workload of the leaf that admits the leaf's own deployer only.
		ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(ownSVID, bundle, tlsconfig.AuthorizeID(ownSVID.ID)))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		handshakes := make(chan error, 2)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				err = conn.(*tls.Conn).Handshake()
				conn.Close()
				handshakes <- err
			}
		}()
		for _, c := range []struct {
			name  string
			svid  *x509svid.SVID
			admit bool
		}{{"own", ownSVID, true}, {"exchanged", exchSVID, false}} {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), tlsconfig.MTLSClientConfig(c.svid, bundle, tlsconfig.AuthorizeAny()))
			if err == nil {
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = conn.Read(make([]byte, 1)) // TLS 1.3: the server's verdict on our certificate
				conn.Close()
			}
			if got := <-handshakes; (got == nil) != c.admit {
				t.Errorf("the server authorizing %s answered the %s SVID (%s): %v; admitted %v, want %v", ownSVID.ID, c.name, c.svid.ID, got, got == nil, c.admit)
			}
		}
	})

	t.Run("go-spiffe-jwt", func(t *testing.T) {
		// The leaf's SPIFFE bundle, as a relying party federating with it gets it.
		bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(leafName), []byte(tc.leaf.export(t, "spiffe-bundle")))
		if err != nil {
			t.Fatalf("the leaf's SPIFFE bundle: %v", err)
		}
		for _, c := range []struct {
			dir, sub string
			admit    bool
		}{{own, ownID, true}, {exch, exchID, false}} {
			svid, err := jwtsvid.ParseAndValidate(strings.TrimSpace(readFile(t, filepath.Join(c.dir, "workload-identity-jwt", "jwt_svid"))), bundle, []string{"vault"})
			if err != nil {
				t.Fatalf("go-spiffe refuses %s's JWT-SVID: %v", c.dir, err)
			}
			if svid.ID.String() != c.sub {
				t.Errorf("JWT-SVID sub %s, want %s", svid.ID, c.sub)
			}
			// The relying party's rule: the leaf's own deployer.
			if admitted := svid.ID.String() == ownID; admitted != c.admit {
				t.Errorf("a relying party admitting %s admits sub %s: %v, want %v", ownID, svid.ID, admitted, c.admit)
			}
		}
	})

	t.Run("not-exchanged-again", func(t *testing.T) {
		// The exchanged identity presented to the leaf as a root identity:
		// it is no bot identity of any root, and trust is not transitive.
		id := filepath.Join(exch, "identity")
		req := signedExchange(t, id, "again")
		api, err := client.NewAPI(tc.leaf.url, tc.leaf.pin)
		if err != nil {
			t.Fatal(err)
		}
		defer api.CloseIdleConnections()
		var refusal *identity.Error
		err = api.Do(t.Context(), http.MethodPost, identity.PathExchange, req, nil)
		if !errors.As(err, &refusal) || refusal.Code != identity.CodeExchangeInvalid || !strings.Contains(refusal.Message, "not a bot identity") {
			t.Fatalf("exchanging the exchanged identity again: %v, want exchange_invalid: not a bot identity", err)
		}
	})

	t.Run("sshd-authorized-principals", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, tc.leaf.login), "ci-"+leafName+"\n", 0o644)
		sshd := startSSHDWith(t, tc.leaf, "AuthorizedPrincipalsFile "+filepath.Join(dir, "%u")+"\n")
		for _, c := range []struct {
			dir   string
			admit bool
		}{{own, true}, {exch, false}} {
			id := filepath.Join(c.dir, "identity")
			r := sshd.connect(t, tc.leaf, "-F", "none", "-i", filepath.Join(id, "key"), "-o", "CertificateFile="+filepath.Join(id, "key-cert.pub"),
				"-o", "UserKnownHostsFile="+filepath.Join(id, "known_hosts"), "-o", "IdentitiesOnly=yes")
			if admitted := r.code == 0 && strings.Contains(r.stdout, "mbot-ok"); admitted != c.admit {
				t.Errorf("sshd admitting principal ci-%s: the identity of %s (principals %v) admitted %v, want %v: %s\nsshd:\n%s", leafName, c.dir,
					parseSSHCert(t, filepath.Join(id, "key-cert.pub")).ValidPrincipals, admitted, c.admit, r, sshd.logs)
			}
		}
	})
}
