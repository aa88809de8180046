package verify

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// The fuzz targets feed every proof parser hostile input. Invariants: no
// panic; a refusal is an *identity.Error with a 4xx code; an admission has
// claims and a proof ID.

const fuzzIssuer = "https://ci.example.com"

// fuzzNow is the clock of the fuzzed verifiers; the seeds are valid then.
var fuzzNow = time.Date(2025, 6, 2, 10, 30, 0, 0, time.UTC)

// fuzzKey signs the fuzzed payloads; every OIDC verifier trusts it through
// static_jwks, so nothing is fetched.
var fuzzKey = ed25519.NewKeyFromSeed([]byte("mbot fuzz signing key, 32 bytes!"))

func fuzzEnv() *Env {
	return &Env{Audience: "acme", Now: func() time.Time { return fuzzNow }}
}

func compileSection(tb testing.TB, method, section string) Verifier {
	tb.Helper()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(section), &node); err != nil {
		tb.Fatal(err)
	}
	v, err := Methods[method].Compile("fuzz", node.Content[0], fuzzEnv())
	if err != nil {
		tb.Fatalf("compiling spec.%s: %v", method, err)
	}
	return v
}

// fuzzCircleOrg is the CircleCI organization id, which is also the audience of its tokens.
const fuzzCircleOrg = "6d4d8d6e-2b61-4b59-a3e2-3c4f7f1f0c51"

// oidcFuzzVerifiers are one verifier per OIDC platform, all trusting
// fuzzIssuer's fuzzKey for audience "acme", so that one token reaches every
// platform's claims function.
func oidcFuzzVerifiers(tb testing.TB) map[string]Verifier {
	tb.Helper()
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: fuzzKey.Public(), KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}})
	if err != nil {
		tb.Fatal(err)
	}
	head := "issuer: " + fuzzIssuer + "\nstatic_jwks: '" + string(jwks) + "'\n"
	sections := map[string]string{
		"github":          head + "allow:\n  - repository: acme/app\n",
		"gitlab":          head + "allow:\n  - project_path: acme/app\n",
		"circleci":        head + "organization_id: " + fuzzCircleOrg + "\nallow:\n  - project_id: p1\n",
		"spacelift":       head + "hostname: acme\nallow:\n  - space_id: root\n",
		"terraform_cloud": head + "audience: acme\nallow:\n  - organization_name: acme\n",
		"bitbucket":       strings.Replace(head, "issuer:", "identity_provider_url:", 1) + "audience: acme\nallow:\n  - workspace_uuid: \"{w}\"\n",
		"buildkite":       head + "allow:\n  - organization_slug: acme\n",
		"gcp":             head + "allow:\n  - project_ids: acme-prod\n",
		"azure":           head + "tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47\nallow:\n  - subscription: 0c4b9c2a-7f3e-4a8e-9d0b-2f1e5c6a7b8d\n",
		"oidc":            head + "allow:\n  - sub: job\n",
		"kubernetes":      head + "type: static_jwks\nallow:\n  - service_account: ci:deployer\n",
	}
	out := map[string]Verifier{}
	for method, section := range sections {
		out[method] = compileSection(tb, method, section)
	}
	return out
}

// signFuzz signs payload as a compact JWS, as an issuer would.
func signFuzz(tb testing.TB, payload []byte) string {
	tb.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: fuzzKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// checkOutcome asserts the invariants of one Verify.
func checkOutcome(t *testing.T, what string, adm *Admission, err error) {
	t.Helper()
	if err == nil {
		if adm == nil || len(adm.Claims) == 0 || adm.ProofID == "" || adm.UsableUntil.IsZero() {
			t.Fatalf("%s: admitted without claims, proof ID or lifetime: %+v", what, adm)
		}
		return
	}
	var ie *identity.Error
	if !errors.As(err, &ie) {
		t.Fatalf("%s: refusal %v is a %T, not an *identity.Error", what, err, err)
	}
	if s := ie.Code.HTTPStatus(); s < 400 || s >= 500 {
		t.Fatalf("%s: refusal %s answers %d, not 4xx: %s", what, ie.Code, s, ie.Message)
	}
	if ie.Message == "" {
		t.Fatalf("%s: refusal %s without a message", what, ie.Code)
	}
}

// claimSeeds are payloads shaped like each platform's tokens, valid at fuzzNow.
func claimSeeds() []map[string]any {
	iat, exp := fuzzNow.Add(-time.Minute).Unix(), fuzzNow.Add(5*time.Minute).Unix()
	base := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": fuzzIssuer, "aud": []string{"acme", fuzzCircleOrg}, "iat": iat, "nbf": iat, "exp": exp, "jti": "j1"}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	return []map[string]any{
		base(map[string]any{"sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "repository_owner": "acme",
			"repository_id": "123", "ref": "refs/heads/main", "actor": "octocat", "workflow": "deploy", "job_workflow_ref": "acme/app/.github/workflows/d.yml@refs/heads/main"}),
		base(map[string]any{"sub": "project_path:acme/app:ref_type:branch:ref:main", "project_path": "acme/app", "namespace_path": "acme",
			"ref": "main", "ref_type": "branch", "ref_protected": "true"}),
		base(map[string]any{"sub": "org/acme/project/p1/user/u1", "oidc.circleci.com/project-id": "p1", "oidc.circleci.com/context-ids": []string{"c1"}}),
		base(map[string]any{"sub": "space:root:stack:infra:run_type:TRACKED:scope:write", "spaceId": "root", "callerType": "stack", "callerId": "infra", "scope": "write"}),
		base(map[string]any{"sub": "organization:acme:project:p:workspace:w:run_phase:apply", "terraform_organization_id": "org-1",
			"terraform_organization_name": "acme", "terraform_workspace_id": "ws-1", "terraform_workspace_name": "w", "terraform_run_phase": "apply"}),
		base(map[string]any{"sub": "{r}:{s}", "workspaceUuid": "{w}", "repositoryUuid": "{r}", "stepUuid": "{s}", "branchName": "main"}),
		base(map[string]any{"sub": "organization:acme:pipeline:app:ref:refs/heads/main:commit:abc:step:deploy", "organization_slug": "acme",
			"pipeline_slug": "app", "job_id": "j", "build_number": 42}),
		base(map[string]any{"sub": "1234567890", "email": "ci@acme-prod.iam.gserviceaccount.com", "email_verified": true,
			"google": map[string]any{"compute_engine": map[string]any{"project_id": "acme-prod", "project_number": 42, "zone": "us-central1-a",
				"instance_id": "1", "instance_name": "runner"}}}),
		base(map[string]any{"sub": "0c4b9c2a", "oid": "0c4b9c2a", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
			"xms_mirid": "/subscriptions/0c4b9c2a-7f3e-4a8e-9d0b-2f1e5c6a7b8d/resourcegroups/ci/providers/Microsoft.Compute/virtualMachines/runner"}),
		base(map[string]any{"sub": "job", "build_number": 42, "branches": []string{"main", "dev"}, "nested": map[string]any{"a": 1}, "ok": true}),
		base(map[string]any{"sub": "system:serviceaccount:ci:deployer", "kubernetes.io": map[string]any{"namespace": "ci",
			"serviceaccount": map[string]any{"name": "deployer", "uid": "u"}, "pod": map[string]any{"name": "runner-1", "uid": "p"},
			"node": map[string]any{"name": "n1"}}}),
	}
}

// FuzzJWTClaims signs a fuzzed payload with a trusted key, so that the
// parsing after the signature check (lifetime, audience, each platform's
// claims, flattenClaims, the allow rules) sees hostile claims.
func FuzzJWTClaims(f *testing.F) {
	for _, c := range claimSeeds() {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"iss":"https://ci.example.com","aud":["acme","x"],"exp":1e400,"iat":-1,"nbf":"x","sub":""}`))
	f.Add([]byte(`{"iss":"https://ci.example.com","aud":"acme","exp":1748860500,"sub":"a","kubernetes.io":null,"google":[]}`))
	f.Add([]byte(`null`))
	verifiers := oidcFuzzVerifiers(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok := signFuzz(t, payload)
		for method, v := range verifiers {
			adm, err := v.Verify(context.Background(), tok)
			checkOutcome(t, method, adm, err)
			if err == nil {
				policy.MatchRules(v.Rules(), adm.Claims)
			}
		}
	})
}

// FuzzJWTProof feeds raw proof text to every OIDC verifier and to the
// parsers that read a token before its signature is checked.
func FuzzJWTProof(f *testing.F) {
	for _, c := range claimSeeds()[:3] {
		b, _ := json.Marshal(c)
		f.Add(signFuzz(f, b))
	}
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + fuzzIssuer + `","sub":"x"}`))
	for _, s := range []string{
		"", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0." + payload + ".",
		"eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0." + payload + ".c2ln",
		"eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0." + payload + ".AAAA",
		`{"payload":"` + payload + `","signatures":[]}`,
	} {
		f.Add(s)
	}
	verifiers := oidcFuzzVerifiers(f)
	f.Fuzz(func(t *testing.T, proof string) {
		if iss, err := unverifiedIssuer(proof); err == nil && iss == "" {
			t.Fatal("unverifiedIssuer returned no issuer and no error")
		}
		if p, err := jwtPayload(proof); err == nil && !json.Valid(p) {
			t.Fatal("jwtPayload returned a payload that is not JSON")
		}
		for method, v := range verifiers {
			adm, err := v.Verify(context.Background(), proof)
			checkOutcome(t, method, adm, err)
		}
	})
}

// stsSeed is a signed GetCallerIdentity request as mbot issue sends it.
func stsSeed(url, date string, edit func(h map[string][]string)) string {
	h := map[string][]string{
		"Content-Type":         {"application/x-www-form-urlencoded; charset=utf-8"},
		"X-Mbot-Audience":      {"acme"},
		"X-Mbot-Nonce":         {"4b1c0e5f2d8a7b6c9e0f1a2b3c4d5e6f"},
		"X-Amz-Date":           {date},
		"X-Amz-Security-Token": {"FwoGZXIvYXdzEJr//////////wEaDO"},
		"Authorization": {"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250602/us-east-1/sts/aws4_request, " +
			"SignedHeaders=content-length;content-type;host;x-amz-date;x-amz-security-token;x-mbot-audience;x-mbot-nonce, " +
			"Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"},
	}
	if edit != nil {
		edit(h)
	}
	b, _ := json.Marshal(identity.AWSSignedRequest{Method: "POST", URL: url, Headers: h, Body: identity.AWSGetCallerIdentityBody})
	return string(b)
}

// FuzzSTSRequest feeds the iam verifier's parser of the client's signed
// STS request (everything before the request is forwarded to STS).
func FuzzSTSRequest(f *testing.F) {
	date := fuzzNow.Format("20060102T150405Z")
	f.Add(stsSeed("https://sts.amazonaws.com", date, nil))
	f.Add(stsSeed("https://sts.eu-west-1.amazonaws.com:443/", date, nil))
	f.Add(stsSeed("https://sts-fips.us-gov-west-1.amazonaws.com", date, nil))
	f.Add(stsSeed("https://sts.cn-north-1.amazonaws.com.cn", date, nil))
	f.Add(stsSeed("http://127.0.0.1:8080", date, nil))
	f.Add(stsSeed("https://sts.amazonaws.com.evil.example", date, nil))
	f.Add(stsSeed("https://sts.amazonaws.com", date, func(h map[string][]string) { h["host"] = []string{"evil"} }))
	f.Add(stsSeed("https://sts.amazonaws.com", date, func(h map[string][]string) { h["Authorization"] = []string{"AWS4-HMAC-SHA256 "} }))
	f.Add(`{"method":"POST","url":"https://sts.amazonaws.com","headers":{"Authorization":null},"body":""}`)
	f.Add(`{}`)
	v := compileSection(f, "iam", "allow:\n  - aws_account: \"123456789012\"\nsts_endpoints: [\"http://127.0.0.1:8080\", vpce-1.sts.us-east-1.vpce.amazonaws.com]\n").(*iamVerifier)
	f.Fuzz(func(t *testing.T, proof string) {
		checked, err := v.checkRequest(proof)
		if err != nil {
			checkOutcome(t, "iam", nil, err)
			return
		}
		u := checked.req.URL
		endpoint := u.Scheme == "https" && isAWSSTSHost(strings.TrimSuffix(strings.ToLower(u.Host), ":443"))
		for _, e := range v.extraEndpoints {
			endpoint = endpoint || (u.Scheme == e.scheme && strings.ToLower(u.Host) == e.host)
		}
		if !endpoint || u.Path != "/" || u.RawQuery != "" || u.User != nil {
			t.Fatalf("a request to %s would be forwarded", u)
		}
		if checked.req.Method != "POST" || checked.req.Header.Get("Host") != "" || checked.signature == "" {
			t.Fatalf("forwarded %s with headers %v", checked.req.Method, checked.req.Header)
		}
	})
}

// FuzzKubernetesToken feeds the in_cluster verifier a token and the API
// server's TokenReview answer for it: the parse before the review and the
// judgement after it (the review itself is a network call).
func FuzzKubernetesToken(f *testing.F) {
	iat, exp := fuzzNow.Add(-time.Minute).Unix(), fuzzNow.Add(9*time.Minute).Unix()
	payload := fmt.Sprintf(`{"aud":["acme"],"exp":%d,"iat":%d,"iss":"https://kubernetes.default.svc.cluster.local","jti":"j1",`+
		`"kubernetes.io":{"namespace":"ci","pod":{"name":"runner-1","uid":"p"},"serviceaccount":{"name":"deployer","uid":"s"}},`+
		`"nbf":%d,"sub":"system:serviceaccount:ci:deployer"}`, exp, iat, iat)
	tok := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2lnbmF0dXJl"
	review := `{"authenticated":true,"user":{"username":"system:serviceaccount:ci:deployer","uid":"s","extra":{` +
		`"authentication.kubernetes.io/pod-name":["runner-1"],"authentication.kubernetes.io/pod-uid":["p"],` +
		`"authentication.kubernetes.io/node-name":["n1"]}},"audiences":["acme"]}`
	f.Add(tok, []byte(review))
	f.Add(tok, []byte(`{"authenticated":false,"error":"token expired"}`))
	f.Add(tok, []byte(`{"authenticated":true,"user":{"username":"system:serviceaccount:ci"},"audiences":["acme"]}`))
	f.Add("a.e30.b", []byte(review))
	f.Add("a.bnVsbA.b", []byte(review))
	f.Add("not a token", []byte(`{}`))
	v := compileSection(f, "kubernetes", "type: in_cluster\napi_server: https://127.0.0.1:6443\nallow:\n  - service_account: ci:deployer\n").(*kubernetesInClusterVerifier)
	f.Fuzz(func(t *testing.T, token string, answer []byte) {
		payload, err := jwtPayload(token)
		if err != nil {
			return // Verify refuses it as proof_invalid before any review
		}
		var st tokenReviewStatus
		if json.Unmarshal(answer, &st) != nil {
			return // review refuses it as issuer_unavailable
		}
		adm, err := v.admit(payload, &st)
		checkOutcome(t, "kubernetes in_cluster", adm, err)
	})
}
