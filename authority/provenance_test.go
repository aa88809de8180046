package authority_test

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestProvenance: the job's identifying claims reach the SSH key ID
// (escaped, so that a log line splits at spaces whatever a claim holds)
// and the X.509 certificate as Sigstore Fulcio's extensions.
func TestProvenance(t *testing.T) {
	a, ci := openAuthority(t)
	tok := githubToken(t, ci, func(c map[string]any) {
		c["run_id"], c["sha"], c["workflow"], c["event_name"] = "4242", "714a629c0b401fdce83e847fc9589983fc6f46bc", "deploy prod\n\"x\"", "push"
	})
	resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", tok, time.Hour, newOutput(t, "identity")), "test")
	if err != nil {
		t.Fatal(err)
	}
	out := resp.Outputs[0]
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.SSHCertificate))
	if err != nil {
		t.Fatal(err)
	}
	keyID := pub.(*ssh.Certificate).KeyId
	for _, want := range []string{" repository=acme/app", " ref=refs/heads/main", " workflow=deploy%20prod%0A%22x%22", " run_id=4242",
		" sha=714a629c0b401fdce83e847fc9589983fc6f46bc"} {
		if !strings.Contains(keyID, want) {
			t.Errorf("key ID %q lacks %q", keyID, want)
		}
	}
	if strings.ContainsAny(keyID, "\n\"") {
		t.Errorf("key ID %q carries a claim's newline or quote", keyID)
	}
	block, _ := pem.Decode([]byte(out.TLSCertificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range cert.Extensions {
		if !strings.HasPrefix(e.Id.String(), "1.3.6.1.4.1.57264.1.") {
			continue
		}
		var v string
		if rest, err := asn1.UnmarshalWithParams(e.Value, &v, "utf8"); err != nil || len(rest) != 0 {
			t.Errorf("extension %s is not a DER UTF8String: %v", e.Id, err)
		}
		got[e.Id.String()] = v
	}
	for oid, want := range map[string]string{"1.3.6.1.4.1.57264.1.13": "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"1.3.6.1.4.1.57264.1.14": "refs/heads/main", "1.3.6.1.4.1.57264.1.20": "push"} {
		if got[oid] != want {
			t.Errorf("extension %s = %q, want %q (all: %v)", oid, got[oid], want, got)
		}
	}
}
