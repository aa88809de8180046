package authority

import (
	"testing"

	"github.com/mbot-dev/mbot/identity"
)

// TestRetryDigest: the digest a bound_keypair retry must repeat covers the
// whole request (the output type and what it asks for, audiences
// included, and the TTL), and is empty, so no retry is admitted, when an
// output carries no key.
func TestRetryDigest(t *testing.T) {
	keyed := func() *identity.JoinRequest {
		return &identity.JoinRequest{JoinToken: "runner", TTLSeconds: 3600, Outputs: []identity.OutputRequest{
			{Name: "app", Type: identity.OutputApplication, TLSPublicKey: "PEM", Application: &identity.ApplicationRequest{SPIFFEID: "/ci/app"}},
		}}
	}
	base := retryDigest(keyed())
	if base == "" || retryDigest(keyed()) != base {
		t.Fatalf("a keyed request's digest %q is empty or not stable", base)
	}
	for name, change := range map[string]func(r *identity.JoinRequest){
		"the type":  func(r *identity.JoinRequest) { r.Outputs[0].Type = identity.OutputIdentity },
		"a field":   func(r *identity.JoinRequest) { r.Outputs[0].Application.SPIFFEID = "/ci/other" },
		"the roles": func(r *identity.JoinRequest) { r.Outputs[0].Roles = []string{"deploy"} },
		"the TTL":   func(r *identity.JoinRequest) { r.TTLSeconds = 60 },
		"an output": func(r *identity.JoinRequest) {
			r.Outputs = append(r.Outputs, identity.OutputRequest{Name: "id", SSHPublicKey: "ssh-ed25519 AAAA"})
		},
		"the key":     func(r *identity.JoinRequest) { r.Outputs[0].TLSPublicKey = "PEM2" },
		"the outputs": func(r *identity.JoinRequest) { r.Outputs[0].Name = "app2" },
	} {
		r := keyed()
		change(r)
		if d := retryDigest(r); d == base || d == "" {
			t.Errorf("changing %s: digest %q, want another non-empty one", name, d)
		}
	}
	jwt := &identity.JoinRequest{JoinToken: "runner", Outputs: []identity.OutputRequest{
		{Name: "jwt", Type: identity.OutputJWT, JWT: &identity.JWTRequest{Audiences: []string{"vault"}}}}}
	if d := retryDigest(jwt); d != "" {
		t.Errorf("a workload-identity-jwt request has retry digest %q, want none: it carries no key", d)
	}
	mixed := keyed()
	mixed.Outputs = append(mixed.Outputs, jwt.Outputs[0])
	if d := retryDigest(mixed); d != "" {
		t.Errorf("a request with a keyless output has retry digest %q, want none", d)
	}
}
