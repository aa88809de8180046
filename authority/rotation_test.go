package authority_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"crypto/x509"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// rotateStep takes one rotation step through the store, as mbot authority
// rotate does, and has the authority pick it up.
func rotateStep(t *testing.T, a *authority.Authority, typ, phase string) {
	t.Helper()
	if _, err := authority.RotateCA(t.Context(), a.Store(), a.CAs(), authority.RotateRequest{Type: typ, Phase: phase,
		Grace: time.Hour, Force: true, Now: time.Now(), Actor: "test"}); err != nil {
		t.Fatalf("rotate %s to %q: %v", typ, phase, err)
	}
	if !a.RefreshNow(t.Context()) {
		t.Fatalf("the authority did not notice the rotation step of %s to %q", typ, phase)
	}
}

// renewWith renews the identity h over mTLS, trusting every TLS CA of the authority.
func renewWith(t *testing.T, a *authority.Authority, url string, h held) (held, error) {
	t.Helper()
	roots := x509.NewCertPool()
	for _, r := range a.CAs().TLSRoots() {
		roots.AddCert(r)
	}
	api, err := client.NewAPIWithIdentity(url, roots, h.tlsCertificate())
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	out := newOutput(t, "identity")
	var resp identity.JoinResponse
	err = api.Do(t.Context(), http.MethodPost, identity.PathRenew,
		&identity.RenewRequest{TTLSeconds: 3600, Outputs: []identity.OutputRequest{out.req}}, &resp)
	if err != nil {
		return held{}, err
	}
	return heldFrom(t, out, &resp), nil
}

// TestRotationRenewals rotates the TLS CA of a serving authority: a bot
// whose certificate the old CA signed renews during the rotation (into a
// certificate of the new CA, with a ca.crt of both), and not after it.
func TestRotationRenewals(t *testing.T) {
	env := startRenewAuthority(t)
	a := env.Authority
	old := a.CAs().TLSCert
	before := tokenJoin(t, a, "runner-1", "secret-1")

	rotateStep(t, a, "tls", "")
	rotateStep(t, a, "tls", authority.PhaseUpdateClients)
	during, err := renewWith(t, a, env.URL, before)
	if err != nil {
		t.Fatalf("renewing an identity of the old CA during update_clients: %v", err)
	}
	if during.cert.CheckSignatureFrom(old) == nil {
		t.Error("the old TLS CA signs renewals during update_clients")
	}
	if n := strings.Count(during.resp.TLSCA, "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("ca.crt of a renewal during the rotation holds %d CAs, want 2", n)
	}

	rotateStep(t, a, "tls", authority.PhaseUpdateServers)
	rotateStep(t, a, "tls", authority.PhaseStandby)
	// The handshake itself refuses a client certificate of a CA no longer trusted.
	if _, err := renewWith(t, a, env.URL, before); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("renewing an identity of the dropped TLS CA after the rotation: %v", err)
	}
	if _, err := renewWith(t, a, env.URL, during); err != nil {
		t.Errorf("renewing an identity of the new CA after the rotation: %v", err)
	}
}

// TestRotationTrustBundles: while any CA is rotated, every place that hands
// it out for trust lists both CAs (exports, the JWKS and the SPIFFE bundle),
// and only one signs.
func TestRotationTrustBundles(t *testing.T) {
	a, _ := openAuthority(t)
	exports := map[string]string{"ssh-user": "ssh-user-ca", "ssh-host": "ssh-host-ca", "tls": "tls-ca", "database-client": "database-client-ca",
		"database-server": "database-server-ca", "kubernetes-client": "kubernetes-client-ca", "spiffe": "spiffe-ca"}
	count := func(s string) int {
		return strings.Count(s, "BEGIN CERTIFICATE") + strings.Count(s, "ssh-ed25519 ")
	}
	for typ, export := range exports {
		rotateStep(t, a, typ+"-ca", "") // the export's name works as --type too
		out, err := a.CAs().Export(export)
		if err != nil {
			t.Fatal(err)
		}
		if n := count(out); n != 2 {
			t.Errorf("export --type %s during init lists %d CAs, want 2", export, n)
		}
	}
	rotateStep(t, a, "jwt", "")
	var jwks struct{ Keys []map[string]string }
	out, err := a.CAs().Export("jwt-jwks")
	if err == nil {
		err = json.Unmarshal([]byte(out), &jwks)
	}
	if err != nil || len(jwks.Keys) != 2 || jwks.Keys[0]["kid"] != a.CAs().JWTKeyID {
		t.Errorf("JWKS during the jwt rotation: %s, %v; want two keys, the signing one first", out, err)
	}
	var bundle struct{ Keys []map[string]any }
	out, err = a.CAs().Export("spiffe-bundle")
	if err == nil {
		err = json.Unmarshal([]byte(out), &bundle)
	}
	if err != nil || len(bundle.Keys) != 4 {
		t.Errorf("SPIFFE bundle during the spiffe and jwt rotations: %s, %v; want 2 X.509 and 2 JWT authorities", out, err)
	}
	status := a.CAs().RotationStatus(time.Now())
	for _, name := range authority.RotationTypes() {
		if !strings.Contains(status, name) {
			t.Errorf("rotate --status does not list %s:\n%s", name, status)
		}
	}
	if strings.Count(status, " init ") != len(authority.RotationTypes())-0 {
		t.Errorf("rotate --status does not show every CA in init:\n%s", status)
	}
}

// TestRotationRefusals: steps out of order, an unknown CA or phase, a
// second start, a start without grace and a step before the grace period
// has passed are refused, each saying what to do.
func TestRotationRefusals(t *testing.T) {
	a, _ := openAuthority(t)
	now := time.Now()
	step := func(req authority.RotateRequest) error {
		t.Helper()
		if req.Now.IsZero() {
			req.Now = now
		}
		_, err := authority.RotateCA(t.Context(), a.Store(), a.CAs(), req)
		if err == nil {
			a.RefreshNow(t.Context())
		}
		return err
	}
	if err := step(authority.RotateRequest{Type: "ssh-user", Grace: time.Hour}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		req  authority.RotateRequest
		want string
	}{
		{"unknown CA", authority.RotateRequest{Type: "ssh-users", Grace: time.Hour}, `--type "ssh-users" is not a CA; use one of ssh-user, ssh-host, tls`},
		{"unknown phase", authority.RotateRequest{Type: "ssh-user", Phase: "rollback"}, `--phase "rollback" is not one of init, update_clients`},
		{"second start", authority.RotateRequest{Type: "ssh-user", Grace: time.Hour}, "the next phase is update_clients, not init"},
		{"skipping a phase", authority.RotateRequest{Type: "ssh-user", Phase: authority.PhaseUpdateServers}, "the next phase is update_clients"},
		{"no grace", authority.RotateRequest{Type: "tls"}, "give the grace period"},
		{"standby without a rotation", authority.RotateRequest{Type: "tls", Phase: authority.PhaseUpdateClients}, "the tls CA is in phase standby: the next phase is init"},
	}
	for _, tc := range cases {
		if err := step(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if err := step(authority.RotateRequest{Type: "ssh-user", Phase: authority.PhaseUpdateClients}); err != nil {
		t.Fatal(err)
	}
	err := step(authority.RotateRequest{Type: "ssh-user", Phase: authority.PhaseUpdateServers, Now: now.Add(59 * time.Minute)})
	if err == nil || !strings.Contains(err.Error(), "grace period runs until") || !strings.Contains(err.Error(), "(1m0s from now)") {
		t.Errorf("update_servers before the grace period ended: %v", err)
	}
	if err := step(authority.RotateRequest{Type: "ssh-user", Phase: authority.PhaseUpdateServers, Now: now.Add(time.Hour)}); err != nil {
		t.Errorf("update_servers once the grace period ended: %v", err)
	}
}
