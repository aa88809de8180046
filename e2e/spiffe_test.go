//go:build linux

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/internal/testservers"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

const (
	svidBot   = "svid-bot"
	tokenSVID = "github-svid"
)

// spiffeResourcesYAML adds a bot whose role grants SPIFFE IDs under
// /ci/%[1]s/ (its team trait), DNS SANs and two JWT audiences.
const spiffeResourcesYAML = `
---
kind: role
version: v1
metadata: {name: svid}
spec:
  spiffe_ids: ["/ci/{{internal.team}}/*"]
  dns_sans: ["*.svc.e2e.test"]
  jwt_audiences: [sts.amazonaws.com, vault]
---
kind: bot
version: v1
metadata: {name: ` + svidBot + `}
spec:
  roles: [svid, ` + roleName + `]
  traits: {team: [payments], logins: [%[1]s]}
---
kind: join_token
version: v1
metadata: {name: ` + tokenSVID + `}
spec:
  bot: ` + svidBot + `
  method: github
  github:
    issuer: %[2]s
    allow:
      - repository: acme/app
`

const spiffeMbotYAML = `authority: %s
ca_pin: %s
token: ` + tokenSVID + `
ttl: 2h
outputs:
  - destination: %s
  - type: application
    destination: %s
    spiffe_id: /ci/payments/app
    dns_sans: [api.svc.e2e.test]
  - type: workload-identity-jwt
    destination: %s
    audiences: [sts.amazonaws.com, vault]
    spiffe_id: /ci/payments/deploy
`

// TestSPIFFEOutputs: mbot issue with mbot.yaml writes an identity, an
// application and a workload-identity-jwt output in one join. go-spiffe
// loads the X.509-SVID files and verifies them by the exported spiffe-ca;
// nginx with ssl_verify_client on and that bundle admits curl with the
// SVID and refuses no certificate and the identity output's tls.crt; a
// go-oidc verifier knowing only the issuer URL verifies each JWT-SVID for
// its audience and refuses it for another.
func TestSPIFFEOutputs(t *testing.T) {
	c, _ := startClusterWith(t, func(c *cluster) string {
		return defaultResources(c) + fmt.Sprintf(spiffeResourcesYAML, c.login, c.ci.URL)
	})
	work := t.TempDir()
	idDir, svidDir, jwtDir := filepath.Join(work, "id"), filepath.Join(work, "svid"), filepath.Join(work, "jwt")
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(spiffeMbotYAML, c.url, c.pin, idDir, svidDir, jwtDir), 0o644)
	vars := gitHubJob(t, c)
	vars["MBOT_CONFIG"] = config
	if res := mbot(t, c.jobEnv(vars), "issue"); res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}

	// go-spiffe loads the files as written and verifies the SVID by the
	// bundle mbot authority export --type spiffe-ca prints.
	svid, err := x509svid.Load(filepath.Join(svidDir, "svid.pem"), filepath.Join(svidDir, "svid_key.pem"))
	if err != nil {
		t.Fatalf("go-spiffe x509svid.Load: %v", err)
	}
	if svid.ID.String() != "spiffe://e2e.test/ci/payments/app" || strings.Join(svid.Certificates[0].DNSNames, ",") != "api.svc.e2e.test" {
		t.Errorf("SVID %s DNS %v", svid.ID, svid.Certificates[0].DNSNames)
	}
	spiffeCA := c.export(t, "spiffe-ca")
	if readFile(t, filepath.Join(svidDir, "svid_bundle.pem")) != spiffeCA {
		t.Error("svid_bundle.pem differs from mbot authority export --type spiffe-ca")
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(clusterName), filepath.Join(svidDir, "svid_bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Errorf("the SVID does not verify by its bundle: %v", err)
	}
	var app struct {
		SPIFFEID string `json:"spiffe_id"`
		Bot      string `json:"bot"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(svidDir, "application.json"))), &app); err != nil || app.SPIFFEID != svid.ID.String() || app.Bot != svidBot {
		t.Errorf("application.json %+v, %v", app, err)
	}
	if st, err := os.Stat(filepath.Join(svidDir, "svid_key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("svid_key.pem: %v %v", st, err)
	}

	t.Run("nginx", func(t *testing.T) {
		serverCA := testservers.NewCA(t, "nginx server CA")
		cert, key := serverCA.Issue(t, testservers.Leaf{CommonName: "localhost", Server: true, DNSNames: []string{"localhost"}})
		n := testservers.StartNginx(t, testservers.NginxConfig{ServerCert: cert, ServerKey: key, ClientCA: []byte(spiffeCA)})
		serverCAFile := filepath.Join(t.TempDir(), "server_ca.pem")
		writeFile(t, serverCAFile, string(serverCA.CertPEM), 0o644)
		url := strings.Replace(n.URL, "127.0.0.1", "localhost", 1)
		for _, tc := range []struct {
			name, want string
			args       []string
		}{
			{"the SVID", "verify=SUCCESS", []string{"--cert", filepath.Join(svidDir, "svid.pem"), "--key", filepath.Join(svidDir, "svid_key.pem")}},
			{"no certificate", "No required SSL certificate was sent", nil},
			{"the identity output's tls.crt", "The SSL certificate error", []string{"--cert", filepath.Join(idDir, "tls.crt"), "--key", filepath.Join(idDir, "tls.key")}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body, err := n.Curl(t, append(tc.args, "--cacert", serverCAFile, url)...)
				if err != nil {
					t.Fatalf("curl: %v", err)
				}
				if !strings.Contains(body, tc.want) {
					t.Errorf("nginx answered %q, want %q", body, tc.want)
				}
			})
		}
	})

	t.Run("go-oidc", func(t *testing.T) {
		token := readFile(t, filepath.Join(jwtDir, "jwt_svid"))
		var all map[string]string
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(jwtDir, "jwt_svids.json"))), &all); err != nil || all["sts.amazonaws.com"] != token || all["vault"] == "" {
			t.Fatalf("jwt_svids.json: %v", err)
		}
		if strings.Contains(readFile(t, filepath.Join(jwtDir, "workload-identity-jwt.json")), token) {
			t.Error("workload-identity-jwt.json holds a token")
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(idDir, "ca.crt"))))
		ctx := oidc.ClientContext(t.Context(), &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}})
		provider, err := oidc.NewProvider(ctx, c.url) // the issuer URL alone: discovery finds the keys
		if err != nil {
			t.Fatalf("discovery at %s: %v", c.url, err)
		}
		for aud, tok := range all {
			idt, err := provider.Verifier(&oidc.Config{ClientID: aud}).Verify(ctx, tok)
			if err != nil {
				t.Fatalf("go-oidc refuses the JWT-SVID for %s: %v", aud, err)
			}
			if idt.Subject != "spiffe://e2e.test/ci/payments/deploy" {
				t.Errorf("subject %s", idt.Subject)
			}
			if time.Until(idt.Expiry) > time.Hour {
				t.Errorf("the JWT-SVID lives until %s, more than an hour", idt.Expiry)
			}
		}
		if _, err := provider.Verifier(&oidc.Config{ClientID: "vault"}).Verify(ctx, token); err == nil {
			t.Error("go-oidc accepts the sts.amazonaws.com JWT-SVID for vault")
		}
	})
}

// TestSPIFFERefusedOutputs: a SPIFFE ID, DNS SAN or audience no role of
// the bot grants fails mbot issue with exit 1 and a message naming the
// role field to add it to; nothing is written and the refusal is audited.
func TestSPIFFERefusedOutputs(t *testing.T) {
	c, _ := startClusterWith(t, func(c *cluster) string {
		return defaultResources(c) + fmt.Sprintf(spiffeResourcesYAML, c.login, c.ci.URL)
	})
	for _, tc := range []struct {
		name, output string
		want         []string
	}{
		{"spiffe id", "type: application\n    spiffe_id: /ci/other/app", []string{`SPIFFE ID path "/ci/other/app"`, "spiffe_ids"}},
		{"dns san", "type: application\n    spiffe_id: /ci/payments/app\n    dns_sans: [db.e2e.test]", []string{`DNS SAN "db.e2e.test"`, "dns_sans"}},
		{"audience", "type: workload-identity-jwt\n    spiffe_id: /ci/payments/app\n    audiences: [vault, https://evil.example]", []string{`JWT audience "https://evil.example"`, "jwt_audiences"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			dir := filepath.Join(work, "out")
			config := filepath.Join(work, "mbot.yaml")
			writeFile(t, config, fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\noutputs:\n  - destination: %s\n    %s\n", c.url, c.pin, tokenSVID, dir, tc.output), 0o644)
			vars := gitHubJob(t, c)
			vars["MBOT_CONFIG"] = config
			res := mbot(t, c.jobEnv(vars), "issue")
			if res.code != 1 {
				t.Fatalf("mbot issue: %s; want exit 1", res)
			}
			for _, w := range append(tc.want, "role_denied", "svid") {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, res.stderr)
				}
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the destination exists after a refusal: %v", err)
			}
			evs := auditEvents(t, c, "join")
			if last := evs[len(evs)-1]; last.Allowed || last.Code != "role_denied" || last.Bot != svidBot {
				t.Errorf("last audit record %+v", last)
			}
		})
	}
}
