//go:build linux

package testservers

import (
	"net/url"
	"strings"
	"testing"
)

// TestNginx proves the harness serves mutual TLS as the application output
// needs it: curl with an X.509-SVID (a URI SAN, no CN), its key and the
// server's CA gets through ssl_verify_client on, and nginx refuses a
// request without a client certificate or with one from another CA.
func TestNginx(t *testing.T) {
	t.Parallel()
	serverCA := NewCA(t, "test nginx server CA")
	bundle := NewCA(t, "test SPIFFE trust bundle")
	otherCA := NewCA(t, "test other CA")
	cert, key := serverCA.Issue(t, localhostServer("localhost"))
	n := StartNginx(t, NginxConfig{ServerCert: cert, ServerKey: key, ClientCA: bundle.CertPEM})

	dir := t.TempDir()
	root := writeTemp(t, dir, "server_ca.pem", serverCA.CertPEM, 0o644)
	spiffeID, _ := url.Parse("spiffe://mbot.test/bot/deployer")
	svid := func(name string, ca *CA) []string {
		c, k := ca.Issue(t, Leaf{URIs: []*url.URL{spiffeID}})
		return []string{"--cert", writeTemp(t, dir, name+".pem", c, 0o644), "--key", writeTemp(t, dir, name+"_key.pem", k, 0o600)}
	}

	tests := []struct {
		name     string
		args     []string
		wantBody string // response body contains
		wantErr  string // curl's message contains
	}{
		{name: "svid from the bundle", args: append(svid("svid", bundle), "--cacert", root, n.URL),
			wantBody: "verify=SUCCESS"},
		{name: "by host name", args: append(svid("svid2", bundle), "--cacert", root, strings.Replace(n.URL, "127.0.0.1", "localhost", 1)),
			wantBody: "verify=SUCCESS"},
		{name: "no client certificate", args: []string{"--cacert", root, n.URL},
			wantBody: "No required SSL certificate was sent"},
		{name: "client certificate from another CA", args: append(svid("other", otherCA), "--cacert", root, n.URL),
			wantBody: "The SSL certificate error"},
		{name: "server not trusted", args: append(svid("svid3", bundle), "--cacert", writeTemp(t, dir, "other_root.pem", otherCA.CertPEM, 0o644), n.URL),
			wantErr: "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, err := n.Curl(t, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("curl = %q, %v; want an error containing %q", body, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(body, tc.wantBody) {
				t.Fatalf("body %q does not contain %q", body, tc.wantBody)
			}
		})
	}
}
