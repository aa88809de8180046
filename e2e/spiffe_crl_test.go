//go:build linux

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/testservers"
)

// svidOther is a second bot with the SPIFFE role of spiffeResourcesYAML,
// whose X.509-SVID must still get through nginx once svidBot is locked.
const svidOther = "svid-other"

const svidOtherYAML = `
---
kind: bot
version: v1
metadata: {name: ` + svidOther + `}
spec:
  roles: [svid, ` + roleName + `]
  traits: {team: [payments], logins: [%[1]s]}
---
kind: join_token
version: v1
metadata: {name: github-` + svidOther + `}
spec:
  bot: ` + svidOther + `
  method: github
  github:
    issuer: %[2]s
    allow:
      - repository: acme/app
`

const svidOnlyMbotYAML = `authority: %s
ca_pin: %s
token: %s
ttl: 2h
outputs:
  - type: application
    destination: %s
    spiffe_id: /ci/payments/app
`

// TestSPIFFECRLNginx: nginx with ssl_verify_client on, the SPIFFE CA as
// ssl_client_certificate and the spiffe CRL (mbot authority export --type
// crl --purpose spiffe) as ssl_crl admits two bots' X.509-SVIDs. After
// mbot lock bot/svid-bot, the CRL fetched again from GET
// /v1/revocations/crl/spiffe lists that SVID's serial, openssl crl
// -verify accepts it against the CA, and once nginx -s reload has read it
// nginx refuses the locked bot's still-valid SVID (400, "The SSL
// certificate error", "certificate revoked" in its log) and still admits
// the other bot's.
func TestSPIFFECRLNginx(t *testing.T) {
	c, _ := startClusterWith(t, func(c *cluster) string {
		return defaultResources(c) + fmt.Sprintf(spiffeResourcesYAML, c.login, c.ci.URL) + fmt.Sprintf(svidOtherYAML, c.login, c.ci.URL)
	})
	work := t.TempDir()
	issue := func(bot, token string) string {
		dir := filepath.Join(work, bot)
		config := filepath.Join(work, bot+".yaml")
		writeFile(t, config, fmt.Sprintf(svidOnlyMbotYAML, c.url, c.pin, token, dir), 0o644)
		vars := gitHubJob(t, c)
		vars["MBOT_CONFIG"] = config
		if res := mbot(t, c.jobEnv(vars), "issue"); res.code != 0 {
			t.Fatalf("mbot issue as %s: %s", bot, res)
		}
		return dir
	}
	lockedDir, otherDir := issue(svidBot, tokenSVID), issue(svidOther, "github-"+svidOther)
	lockedSerial := parseCertChain(t, filepath.Join(lockedDir, "svid.pem"))[0].SerialNumber

	spiffeCA := c.export(t, "spiffe-ca")
	caFile := filepath.Join(work, "spiffe_ca.pem")
	writeFile(t, caFile, spiffeCA, 0o644)
	openssl := requireTool(t, "openssl")
	// verifyCRL checks the CRL as a consumer's parser reads it: openssl crl
	// -verify against the SPIFFE CA, and the serials it revokes.
	verifyCRL := func(name, crl string) []string {
		t.Helper()
		path := filepath.Join(work, name)
		writeFile(t, path, crl, 0o644)
		if res := run(t, baseEnv(c.home), openssl, "crl", "-in", path, "-CAfile", caFile, "-verify", "-noout"); res.code != 0 || !strings.Contains(res.stdout+res.stderr, "verify OK") {
			t.Fatalf("openssl crl -verify on %s: %s", name, res)
		}
		block, _ := pem.Decode([]byte(crl))
		if block == nil || block.Type != "X509 CRL" {
			t.Fatalf("%s is not a PEM CRL:\n%s", name, crl)
		}
		list, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		var serials []string
		for _, e := range list.RevokedCertificateEntries {
			serials = append(serials, fmt.Sprintf("%X", e.SerialNumber))
		}
		return serials
	}
	before := c.exportCRL(t, "spiffe")
	if got := verifyCRL("before.crl", before); len(got) != 0 {
		t.Fatalf("the spiffe CRL revokes %v before any lock", got)
	}

	serverCA := testservers.NewCA(t, "nginx server CA")
	cert, key := serverCA.Issue(t, testservers.Leaf{CommonName: "localhost", Server: true, DNSNames: []string{"localhost"}})
	n := testservers.StartNginx(t, testservers.NginxConfig{ServerCert: cert, ServerKey: key, ClientCA: []byte(spiffeCA), CRL: []byte(before)})
	serverCAFile := filepath.Join(work, "server_ca.pem")
	writeFile(t, serverCAFile, string(serverCA.CertPEM), 0o644)
	url := strings.Replace(n.URL, "127.0.0.1", "localhost", 1)
	curl := func(dir string) string {
		t.Helper()
		body, err := n.Curl(t, "--cert", filepath.Join(dir, "svid.pem"), "--key", filepath.Join(dir, "svid_key.pem"), "--cacert", serverCAFile, url)
		if err != nil {
			t.Fatalf("curl with %s: %v\nnginx:\n%s", dir, err, n.Logs())
		}
		return body
	}
	for _, dir := range []string{lockedDir, otherDir} {
		if body := curl(dir); !strings.Contains(body, "verify=SUCCESS") {
			t.Fatalf("nginx with the CRL before the lock answered %q for %s", body, dir)
		}
	}

	mustMbot(t, baseEnv(c.home), "lock", "bot/"+svidBot, "--reason", "runner stolen", "--config", c.config)
	// nginx reads ssl_crl when it starts or reloads: until then it still
	// admits the SVID.
	if body := curl(lockedDir); !strings.Contains(body, "verify=SUCCESS") {
		t.Errorf("nginx refused the SVID before it read the new CRL: %q", body)
	}

	after := fetchCRL(t, c, "spiffe")
	if got := verifyCRL("after.crl", after); !slices.Equal(got, []string{fmt.Sprintf("%X", lockedSerial)}) {
		t.Fatalf("GET /v1/revocations/crl/spiffe after the lock revokes %v, want [%X] (the locked bot's SVID)", got, lockedSerial)
	}
	if exported := verifyCRL("exported.crl", c.exportCRL(t, "spiffe")); !slices.Equal(exported, []string{fmt.Sprintf("%X", lockedSerial)}) {
		t.Errorf("mbot authority export --type crl --purpose spiffe revokes %v, want [%X]", exported, lockedSerial)
	}
	n.Reload(t, []byte(after))

	if body := curl(lockedDir); !strings.Contains(body, "400") || !strings.Contains(body, "The SSL certificate error") {
		t.Errorf("nginx answered %q for the locked bot's still-valid SVID after the reload, want 400 The SSL certificate error", body)
	}
	if !strings.Contains(n.Logs(), "certificate revoked") {
		t.Errorf("nginx did not log a revoked certificate:\n%s", n.Logs())
	}
	if body := curl(otherDir); !strings.Contains(body, "verify=SUCCESS") {
		t.Errorf("nginx answered %q for %s's SVID after %s's lock", body, svidOther, svidBot)
	}
}

// exportCRL is mbot authority export --type crl --purpose purpose.
func (c *cluster) exportCRL(t *testing.T, purpose string) string {
	t.Helper()
	return mustMbot(t, baseEnv(c.home), "authority", "export", "--type", "crl", "--purpose", purpose, "--config", c.config).stdout
}

// fetchCRL gets the CRL of purpose from the running authority, as a
// server's cron job would: GET /v1/revocations/crl/{purpose}, the
// authority's TLS CA trusted.
func fetchCRL(t *testing.T, c *cluster, purpose string) string {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(c.export(t, "tls-ca")))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(c.url + "/v1/revocations/crl/" + purpose)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/revocations/crl/%s: %s %s %v", purpose, resp.Status, body, err)
	}
	return string(body)
}
