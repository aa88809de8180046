package authority_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
	"golang.org/x/crypto/ssh"
)

// exchangedYAML: cluster acme's own bot deployer and the role it shares
// with the root bots it exchanges for (mapped by a trusted cluster): the
// {{mbot.*}} templates grant each its own login and SPIFFE ID; wide grants
// every path under /bot/ and /mbot/, which must still not let either pass
// for the other.
const exchangedYAML = `kind: role
version: v1
metadata: {name: shared}
spec:
  logins: ["ci-{{mbot.cluster}}", "root-{{mbot.root_cluster}}", "{{mbot.nope}}"]
  spiffe_ids: ["/bot/{{mbot.bot}}", "/mbot/cluster/{{mbot.root_cluster}}/bot/*"]
  jwt_audiences: [vault]
  host_names: ["*.acme.internal"]
---
kind: role
version: v1
metadata: {name: wide}
spec:
  spiffe_ids: ["/bot/*", "/mbot/*"]
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [shared, wide]
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: ISSUER
    allow:
      - repository: acme/app
`

func openExchangedAuthority(t *testing.T) (*authority.Authority, *simci.Issuer) {
	t.Helper()
	return openAuthorityFrom(t, exchangedYAML)
}

// TestExchangedIdentityNamedApart: cluster acme's own bot deployer and
// root-a's bot deployer exchanged into acme, each with the same outputs
// and the same role, get certificates no relying party can take for one
// another: URI SAN, X.509 subject, SSH key ID, X.509-SVID and JWT-SVID
// sub all differ, the exchanged ones under root-a's name; the role's
// {{mbot.*}} templates grant each its own login.
func TestExchangedIdentityNamedApart(t *testing.T) {
	a, ci := openExchangedAuthority(t)
	outputs := func() []output {
		return []output{newOutput(t, "id"), applicationOutput(t, "app", "", nil), jwtOutput("jwt", "", "vault"), sshHostOutput(t, "host", []string{"web1.acme.internal"})}
	}
	own, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, outputs()...), "test")
	if err != nil {
		t.Fatal(err)
	}
	var reqs []identity.OutputRequest
	for _, o := range outputs() {
		reqs = append(reqs, o.req)
	}
	exchanged, err := a.SignExchanged("deployer", "root-a", "acme-root", []string{"shared"}, reqs)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name                    string
		resp                    identity.JoinResponse
		uri, cn, o, keyID, host string
		logins                  []string
	}{
		{"own", *own, "spiffe://acme/bot/deployer", "deployer", "acme", "bot=deployer join_token=github-deploy ", "bot=deployer join_token=github-deploy ",
			[]string{"ci-acme"}},
		{"exchanged", *exchanged, "spiffe://acme/mbot/cluster/root-a/bot/deployer", "root-a/deployer", "mbot-root:root-a",
			"bot=root-a/deployer cluster=root-a join_token=acme-root ", "bot=root-a/deployer cluster=root-a join_token=acme-root ", []string{"ci-root-a", "root-root-a"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, app, jwtOut, host := c.resp.Outputs[0], c.resp.Outputs[1], c.resp.Outputs[2], c.resp.Outputs[3]
			cert := parseCertPEM(t, id.TLSCertificate)
			if len(cert.URIs) != 1 || cert.URIs[0].String() != c.uri {
				t.Errorf("identity tls.crt URI SANs %v, want %s", cert.URIs, c.uri)
			}
			if cert.Subject.CommonName != c.cn || !slices.Equal(cert.Subject.Organization, []string{c.o}) {
				t.Errorf("identity tls.crt subject %s, want CN=%s O=%s", cert.Subject, c.cn, c.o)
			}
			sshCert := parseUserCert(t, id.SSHCertificate)
			if !strings.HasPrefix(sshCert.KeyId, c.keyID) {
				t.Errorf("SSH key ID %q, want it to start %q", sshCert.KeyId, c.keyID)
			}
			if !slices.Equal(sshCert.ValidPrincipals, c.logins) || !slices.Equal(id.Logins, c.logins) {
				t.Errorf("SSH principals %v (logins %v), want %v", sshCert.ValidPrincipals, id.Logins, c.logins)
			}
			svid := parseCertPEM(t, app.TLSCertificate)
			if len(svid.URIs) != 1 || svid.URIs[0].String() != c.uri || app.Application.SPIFFEID != c.uri || !slices.Equal(svid.Subject.Organization, []string{c.o}) {
				t.Errorf("X.509-SVID URIs %v O %v (grant %s), want %s O=%s", svid.URIs, svid.Subject.Organization, app.Application.SPIFFEID, c.uri, c.o)
			}
			tok, err := jwt.ParseSigned(jwtOut.JWT.SVIDs[0].Token, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var claims jwt.Claims
			if err := tok.Claims(a.CAs().JWT.Public(), &claims); err != nil {
				t.Fatal(err)
			}
			if claims.Subject != c.uri || jwtOut.JWT.SPIFFEID != c.uri {
				t.Errorf("JWT-SVID sub %s (grant %s), want %s", claims.Subject, jwtOut.JWT.SPIFFEID, c.uri)
			}
			hostCert := parseUserCert(t, host.SSHCertificate)
			if !strings.HasPrefix(hostCert.KeyId, c.host) {
				t.Errorf("SSH host key ID %q, want it to start %q", hostCert.KeyId, c.host)
			}
		})
	}
}

// TestExchangedSPIFFENamespace: whatever the roles grant, an own bot
// holds no SPIFFE ID under /mbot/ (an exchanged identity's or a tunnel's)
// and an exchanged identity none under /bot/ (an own bot's) nor another
// root's or bot's under /mbot/.
func TestExchangedSPIFFENamespace(t *testing.T) {
	a, ci := openExchangedAuthority(t)
	for _, c := range []struct {
		name, path string
		root       string // "" for the own bot
		want       string
	}{
		{"own bot as an exchanged identity", "/mbot/cluster/root-a/bot/deployer", "", "which the authority names itself"},
		{"own bot as the tunnel", identity.TunnelSPIFFEPath, "", "which the authority names itself"},
		{"exchanged identity as an own bot", "/bot/deployer", "root-a", "names a bot of cluster acme"},
		{"exchanged identity as another root's", "/mbot/cluster/root-b/bot/deployer", "root-a", "which the authority names itself"},
		{"exchanged identity as another bot", "/mbot/cluster/root-a/bot/other", "root-a", "which the authority names itself"},
	} {
		for _, o := range []output{applicationOutput(t, "app", c.path, nil, "wide"), jwtOutput("jwt", c.path, "vault")} {
			t.Run(c.name+"/"+o.req.Type, func(t *testing.T) {
				var err error
				if c.root == "" {
					_, err = a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, o), "test")
				} else {
					_, err = a.SignExchanged("deployer", c.root, "acme-root", []string{"shared", "wide"}, []identity.OutputRequest{o.req})
				}
				var ierr *identity.Error
				if !errors.As(err, &ierr) || ierr.Code != identity.CodeRoleDenied || !strings.Contains(ierr.Message, c.want) {
					t.Fatalf("asking for %s: %v, want role_denied saying %q", c.path, err, c.want)
				}
			})
		}
	}
	// The exchanged identity's own ID, asked for by name, is granted.
	o := applicationOutput(t, "app", "/mbot/cluster/root-a/bot/deployer", nil)
	if _, err := a.SignExchanged("deployer", "root-a", "acme-root", []string{"shared"}, []identity.OutputRequest{o.req}); err != nil {
		t.Errorf("the exchanged identity's own SPIFFE ID: %v", err)
	}
}

func parseUserCert(t *testing.T, line string) *ssh.Certificate {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%q is no certificate", line)
	}
	return cert
}
