package verify_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// tokenName is the join token every test compiles; refusals must name it.
const tokenName = "ci-deploy"

// now is the authority's clock in these tests; tokens are minted around it.
var now = time.Date(2025, 6, 2, 10, 30, 0, 0, time.UTC)

// circleciOrg is the organization of testdata/claims/circleci.json.
const circleciOrg = "b1c2d3e4-0000-4000-8000-000000000001"

// platform is what the shared proof tests need to know about one CI platform.
type platform struct {
	name string
	// audience is the aud its tokens must carry for the join token below.
	audience string
	// section is the join token's spec.<name> section trusting issuer.
	section func(issuer string) string
	// claims is what a token made from testdata/claims/<name>.json must yield.
	claims policy.Claims
}

var platforms = []platform{
	{
		name:     "github",
		audience: "acme",
		section: func(issuer string) string {
			return "issuer: " + issuer + "\nallow:\n  - repository: acme/app\n    ref: refs/heads/main\n"
		},
		claims: policy.Claims{
			"sub":                 {"repo:acme/app:environment:production"},
			"repository":          {"acme/app"},
			"repository_owner":    {"acme"},
			"repository_id":       {"74"},
			"repository_owner_id": {"65"},
			"workflow":            {"deploy"},
			"environment":         {"production"},
			"actor":               {"octocat"},
			"ref":                 {"refs/heads/main"},
			"ref_type":            {"branch"},
			"job_workflow_ref":    {"acme/automation/.github/workflows/oidc.yml@refs/heads/main"},
			"event_name":          {"workflow_dispatch"},
			"run_id":              {"5566778899"},
			"sha":                 {"e1b4c8a5f9f5b4e1f2d5c8a9b7e6d5c4b3a29180"},
		},
	},
	{
		name:     "gitlab",
		audience: "acme",
		section: func(issuer string) string {
			return "issuer: " + issuer + "\nallow:\n  - project_path: acme/app\n    ref_protected: true\n"
		},
		claims: policy.Claims{
			"sub":                   {"project_path:acme/app:ref_type:branch:ref:main"},
			"namespace_path":        {"acme"},
			"project_path":          {"acme/app"},
			"project_visibility":    {"private"},
			"user_login":            {"sample-user"},
			"pipeline_source":       {"push"},
			"pipeline_id":           {"574"},
			"job_id":                {"302"},
			"ref":                   {"main"},
			"ref_type":              {"branch"},
			"ref_protected":         {"true"},
			"environment":           {"production"},
			"environment_protected": {"true"},
			"deployment_tier":       {"production"},
			"ci_config_ref_uri":     {"gitlab.com/acme/app//.gitlab-ci.yml@refs/heads/main"},
			"sha":                   {"714a629c0b401fdce83e847fc9589983fc6f46bc"},
		},
	},
	{
		name:     "circleci",
		audience: circleciOrg,
		section: func(issuer string) string {
			return "issuer: " + issuer + "\norganization_id: " + circleciOrg +
				"\nallow:\n  - project_id: 8f2b3c4d-0000-4000-8000-000000000002\n"
		},
		claims: policy.Claims{
			"sub":        {"org/b1c2d3e4-0000-4000-8000-000000000001/project/8f2b3c4d-0000-4000-8000-000000000002/user/5f1e2d3c-0000-4000-8000-000000000003/vcs-origin/github.com/acme/app/vcs-ref/refs/heads/main"},
			"project_id": {"8f2b3c4d-0000-4000-8000-000000000002"},
			"context_id": {"a74579f1-2e7d-451e-b009-5c082ad2729e", "cb32986e-2f6f-4f43-b2bd-d3c2fd98e903"},
			"vcs_origin": {"github.com/acme/app"},
			"vcs_ref":    {"refs/heads/main"},
		},
	},
}

// testIssuer is a loopback OIDC issuer: discovery document and JWKS over
// HTTP, one signing key.
type testIssuer struct {
	URL    string
	Client *http.Client
	alg    jose.SignatureAlgorithm
	key    crypto.Signer
	kid    string
}

func startIssuer(t *testing.T, alg jose.SignatureAlgorithm) *testIssuer {
	t.Helper()
	iss := &testIssuer{alg: alg, key: testKey(t, alg, "issuer"), kid: "key-2025-06"}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	iss.URL, iss.Client = srv.URL, srv.Client()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                srv.URL,
			"jwks_uri":                              srv.URL + "/.well-known/jwks",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{string(alg)},
		})
	})
	mux.HandleFunc("GET /.well-known/jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(iss.JWKS()))
	})
	return iss
}

// JWKS is the issuer's public key set, as served and as put in static_jwks.
func (i *testIssuer) JWKS() string {
	data, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: i.key.Public(), KeyID: i.kid, Algorithm: string(i.alg), Use: "sig"},
	}})
	if err != nil {
		panic(err)
	}
	return string(data)
}

// Sign signs claims with the issuer's key, as the platform would.
func (i *testIssuer) Sign(t *testing.T, claims map[string]any) string {
	return signJWT(t, i.alg, i.key, i.kid, claims)
}

// publicKeyPEM and publicKeyDER are the issuer's public key as an attacker
// would download it, for the HS256 key-confusion attack.
func (i *testIssuer) publicKeyDER(t *testing.T) []byte {
	der, err := x509.MarshalPKIXPublicKey(i.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (i *testIssuer) publicKeyPEM(t *testing.T) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: i.publicKeyDER(t)})
}

var (
	keysMu sync.Mutex
	keys   = map[string]crypto.Signer{}
)

// testKey returns a key for alg, the same for the same name within the test
// binary: RSA generation is slow enough to matter in a table of issuers.
func testKey(t *testing.T, alg jose.SignatureAlgorithm, name string) crypto.Signer {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	id := string(alg) + "/" + name
	if k, ok := keys[id]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case jose.RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("no test key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	keys[id] = k
	return k
}

// signJWT signs claims as a compact JWS with alg; key may be a []byte for HS*.
func signJWT(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsignedJWT is a token with "alg": "none" and an empty signature.
func unsignedJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

// platformClaims reads testdata/claims/<name>.json.
func platformClaims(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "claims", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("testdata/claims/%s.json: %v", name, err)
	}
	for _, reserved := range []string{"iss", "aud", "exp", "iat", "nbf", "jti"} {
		if _, ok := c[reserved]; ok {
			t.Fatalf("testdata/claims/%s.json sets %s; tests fill it", name, reserved)
		}
	}
	return c
}

// tokenClaims are the platform's documented claims issued by iss for aud
// at now, valid for 5 minutes.
func tokenClaims(t *testing.T, name, iss, aud string) map[string]any {
	c := platformClaims(t, name)
	c["iss"] = iss
	c["aud"] = aud
	c["iat"] = now.Unix()
	c["nbf"] = now.Unix()
	c["exp"] = now.Add(5 * time.Minute).Unix()
	c["jti"] = fmt.Sprintf("jti-%d", time.Now().UnixNano())
	return c
}

// newEnv is the authority's verification environment, trusting client for HTTP.
func newEnv(client *http.Client) *verify.Env {
	return &verify.Env{Audience: "acme", HTTPClient: client, Now: func() time.Time { return now }}
}

// joinTokenYAML wraps a method section in a join_token resource. The
// section's first line is line 8 of the document.
func joinTokenYAML(method, section string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kind: join_token\nversion: v1\nmetadata: {name: %s}\nspec:\n  bot: deployer\n  method: %s\n  %s:\n", tokenName, method, method)
	for _, line := range strings.Split(strings.TrimRight(section, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}

// compile parses section as spec.<method> of a join token, the way the
// authority reads resource files, and compiles it.
func compile(t *testing.T, method, section string, env *verify.Env) (verify.Verifier, error) {
	t.Helper()
	res, err := resources.Parse("tokens.yaml", []byte(joinTokenYAML(method, section)))
	if err != nil {
		t.Fatalf("parsing the join token: %v", err)
	}
	return verify.Methods[method].Compile(tokenName, res[0].JoinToken.Spec.Section(), env)
}

// checkCompiled checks the outcome of compile: a verifier with rules when
// want is empty, else an error containing want.
func checkCompiled(t *testing.T, v verify.Verifier, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		if len(v.Rules()) == 0 {
			t.Error("compiled without rules")
		}
		return
	}
	if err == nil {
		t.Fatalf("compiled; want error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func mustCompile(t *testing.T, method, section string, env *verify.Env) verify.Verifier {
	t.Helper()
	v, err := compile(t, method, section, env)
	if err != nil {
		t.Fatalf("compiling spec.%s: %v", method, err)
	}
	return v
}

// wantRefusal checks that err is an *identity.Error with code whose message
// names the join token and contains every fragment.
func wantRefusal(t *testing.T, err error, code identity.ErrorCode, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("admitted; want refusal %s", code)
	}
	var ie *identity.Error
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *identity.Error", err, err)
	}
	if ie.Code != code {
		t.Fatalf("code %s, want %s (message: %s)", ie.Code, code, ie.Message)
	}
	if !strings.Contains(ie.Message, `"`+tokenName+`"`) {
		t.Errorf("message does not name join token %q: %s", tokenName, ie.Message)
	}
	for _, f := range fragments {
		if !strings.Contains(ie.Message, f) {
			t.Errorf("message does not mention %q: %s", f, ie.Message)
		}
	}
}

// TestVerifyProof runs every proof-level check (signature, algorithm, key,
// issuer, audience, lifetime) against each platform, with RSA and ECDSA issuers.
func TestVerifyProof(t *testing.T) {
	type tokenFunc func(t *testing.T, iss *testIssuer, claims map[string]any) string
	signed := func(t *testing.T, iss *testIssuer, claims map[string]any) string { return iss.Sign(t, claims) }
	cases := []struct {
		name string
		edit func(c map[string]any)
		// token makes the proof from the edited claims; default: signed by the issuer.
		token     tokenFunc
		wantCode  identity.ErrorCode // empty: admitted
		wantInMsg []string
	}{
		{name: "valid token admitted"},
		{
			name:     "alg none",
			token:    func(t *testing.T, _ *testIssuer, c map[string]any) string { return unsignedJWT(t, c) },
			wantCode: identity.CodeProofInvalid,
		},
		{
			name: "HS256 keyed with the issuer's PEM public key",
			token: func(t *testing.T, iss *testIssuer, c map[string]any) string {
				return signJWT(t, jose.HS256, iss.publicKeyPEM(t), iss.kid, c)
			},
			wantCode: identity.CodeProofInvalid,
		},
		{
			name: "HS256 keyed with the issuer's DER public key",
			token: func(t *testing.T, iss *testIssuer, c map[string]any) string {
				return signJWT(t, jose.HS256, iss.publicKeyDER(t), iss.kid, c)
			},
			wantCode: identity.CodeProofInvalid,
		},
		{
			name: "kid not in the JWKS",
			token: func(t *testing.T, iss *testIssuer, c map[string]any) string {
				return signJWT(t, iss.alg, testKey(t, iss.alg, "attacker"), "key-2024-01", c)
			},
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"signature"},
		},
		{
			name: "forged: another key with the issuer's kid",
			token: func(t *testing.T, iss *testIssuer, c map[string]any) string {
				return signJWT(t, iss.alg, testKey(t, iss.alg, "attacker"), iss.kid, c)
			},
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"signature"},
		},
		{
			name: "claims altered after signing",
			token: func(t *testing.T, iss *testIssuer, c map[string]any) string {
				tok := iss.Sign(t, c)
				c2 := maps.Clone(c)
				c2["sub"] = "repo:attacker/app:ref:refs/heads/main"
				payload, _ := json.Marshal(c2)
				parts := strings.Split(tok, ".")
				return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
			},
			wantCode: identity.CodeProofInvalid,
		},
		{
			name:      "wrong issuer",
			edit:      func(c map[string]any) { c["iss"] = "https://issuer.attacker.example" },
			wantCode:  identity.CodeWrongIssuer,
			wantInMsg: []string{"https://issuer.attacker.example"},
		},
		{
			name:      "wrong audience",
			edit:      func(c map[string]any) { c["aud"] = "https://github.com/acme" },
			wantCode:  identity.CodeWrongAudience,
			wantInMsg: []string{"https://github.com/acme"},
		},
		{
			name: "audience among several",
			edit: func(c map[string]any) { c["aud"] = []string{"sts.amazonaws.com", c["aud"].(string)} },
		},
		{
			name: "expired beyond the leeway",
			edit: func(c map[string]any) {
				c["iat"], c["nbf"] = now.Add(-10*time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
				c["exp"] = now.Add(-verify.Leeway - time.Second).Unix()
			},
			wantCode: identity.CodeProofExpired,
		},
		{
			name: "expired within the leeway",
			edit: func(c map[string]any) {
				c["iat"], c["nbf"] = now.Add(-10*time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
				c["exp"] = now.Add(-verify.Leeway + time.Second).Unix()
			},
		},
		{
			name:     "no exp",
			edit:     func(c map[string]any) { delete(c, "exp") },
			wantCode: identity.CodeProofInvalid,
		},
		{
			name: "nbf in the future beyond the leeway",
			edit: func(c map[string]any) {
				c["nbf"] = now.Add(verify.Leeway + 2*time.Second).Unix()
				c["exp"] = now.Add(10 * time.Minute).Unix()
			},
			wantCode: identity.CodeProofNotYetValid,
		},
		{
			name: "nbf in the future within the leeway",
			edit: func(c map[string]any) { c["nbf"] = now.Add(verify.Leeway - 2*time.Second).Unix() },
		},
		{
			name: "iat in the future beyond the leeway",
			edit: func(c map[string]any) {
				c["iat"] = now.Add(verify.Leeway + 2*time.Second).Unix()
				c["exp"] = now.Add(10 * time.Minute).Unix()
			},
			wantCode: identity.CodeProofNotYetValid,
		},
		{
			name: "not a JWT",
			token: func(*testing.T, *testIssuer, map[string]any) string {
				return "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
			},
			wantCode: identity.CodeProofInvalid,
		},
	}
	for _, p := range platforms {
		for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256} {
			iss := startIssuer(t, alg)
			for _, tc := range cases {
				t.Run(p.name+"/"+string(alg)+"/"+tc.name, func(t *testing.T) {
					v := mustCompile(t, p.name, p.section(iss.URL), newEnv(iss.Client))
					claims := tokenClaims(t, p.name, iss.URL, p.audience)
					if tc.edit != nil {
						tc.edit(claims)
					}
					mint := tc.token
					if mint == nil {
						mint = signed
					}
					adm, err := v.Verify(t.Context(), mint(t, iss, claims))
					if tc.wantCode != "" {
						wantRefusal(t, err, tc.wantCode, tc.wantInMsg...)
						return
					}
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					if !reflect.DeepEqual(adm.Claims, p.claims) {
						t.Errorf("claims\n got %v\nwant %v", adm.Claims, p.claims)
					}
					if adm.ProofID == "" {
						t.Error("no proof id: the token could be replayed")
					}
					if exp := time.Unix(claims["exp"].(int64), 0); !adm.UsableUntil.Equal(exp.Add(verify.Leeway)) {
						t.Errorf("usable until %s, want exp + leeway %s", adm.UsableUntil, exp.Add(verify.Leeway))
					}
					if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
						t.Errorf("the join token's rules refuse the platform's documented token: %s", why)
					}
				})
			}
		}
	}
}

// TestProofIDIgnoresEncoding checks that the replay identity of a token
// does not depend on its text: base64url leaves spare bits in the last
// character of the signature, and a token re-encoded there still verifies.
func TestProofIDIgnoresEncoding(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256} {
		iss := startIssuer(t, alg)
		for _, withJTI := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/jti=%t", alg, withJTI), func(t *testing.T) {
				v := mustCompile(t, "circleci", platforms[2].section(iss.URL), newEnv(iss.Client))
				claims := tokenClaims(t, "circleci", iss.URL, circleciOrg)
				if !withJTI {
					delete(claims, "jti") // CircleCI documents no jti claim
				}
				tok := iss.Sign(t, claims)
				variant := reencodeSignature(t, tok)
				first, err := v.Verify(t.Context(), tok)
				if err != nil {
					t.Fatal(err)
				}
				second, err := v.Verify(t.Context(), variant)
				if err != nil {
					t.Fatalf("the re-encoded token no longer verifies (%v); the test needs another variant", err)
				}
				if first.ProofID != second.ProofID {
					t.Errorf("the same signed token has two proof ids (%s, %s): it can be replayed by re-encoding it", first.ProofID, second.ProofID)
				}
			})
		}
	}
}

// reencodeSignature flips a spare bit of the signature's last base64url
// character: another text for the same signature bytes.
func reencodeSignature(t *testing.T, tok string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	variant := tok[:len(tok)-1] + string(alphabet[last^1])
	sig := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s[strings.LastIndexByte(s, '.')+1:])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if variant == tok || string(sig(variant)) != string(sig(tok)) {
		t.Fatal("the variant does not carry the same signature bytes")
	}
	return variant
}

func TestVerifyIssuerUnavailable(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	for _, tc := range []struct {
		name, issuer string
		client       *http.Client
	}{
		{"connection refused", downURL, http.DefaultClient},
		{"discovery answers 503", failing.URL, failing.Client()},
	} {
		for _, p := range platforms {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				v := mustCompile(t, p.name, p.section(tc.issuer), newEnv(tc.client))
				tok := signJWT(t, jose.ES256, testKey(t, jose.ES256, "issuer"), "k1", tokenClaims(t, p.name, tc.issuer, p.audience))
				_, err := v.Verify(t.Context(), tok)
				wantRefusal(t, err, identity.CodeIssuerUnavailable, tc.issuer, "static_jwks")
			})
		}
	}
}

// noNetwork fails the test on any HTTP request.
type noNetwork struct{ t *testing.T }

func (n noNetwork) RoundTrip(r *http.Request) (*http.Response, error) {
	n.t.Errorf("unexpected request to %s: static_jwks must verify offline", r.URL)
	return nil, errors.New("no network in this test")
}

func TestStaticJWKS(t *testing.T) {
	iss := startIssuer(t, jose.ES256)
	offline := &http.Client{Transport: noNetwork{t}}
	// The public github.com issuer, verified offline against pinned keys.
	section := "static_jwks: '" + iss.JWKS() + "'\nallow:\n  - repository: acme/app\n"
	v := mustCompile(t, "github", section, newEnv(offline))

	claims := tokenClaims(t, "github", verify.GitHubIssuer, "acme")
	adm, err := v.Verify(t.Context(), iss.Sign(t, claims))
	if err != nil {
		t.Fatalf("a token signed by a pinned key is refused: %v", err)
	}
	if got := adm.Claims["repository"]; !reflect.DeepEqual(got, []string{"acme/app"}) {
		t.Errorf("repository claim %v", got)
	}

	forged := signJWT(t, jose.ES256, testKey(t, jose.ES256, "attacker"), iss.kid, claims)
	_, err = v.Verify(t.Context(), forged)
	wantRefusal(t, err, identity.CodeProofInvalid)

	claims["iss"] = iss.URL
	_, err = v.Verify(t.Context(), iss.Sign(t, claims))
	wantRefusal(t, err, identity.CodeWrongIssuer, verify.GitHubIssuer)
}

func TestCompile(t *testing.T) {
	iss := startIssuer(t, jose.ES256)
	privateJWKS, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: iss.key, KeyID: "leaked", Algorithm: "ES256"}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, method, section string
		want                  string // error fragment; empty: compiles
	}{
		{"github minimal", "github", "allow:\n  - repository: acme/app\n", ""},
		{"several patterns per field", "github", "allow:\n  - repository: acme/app\n    ref: [refs/heads/main, refs/tags/v*]\n", ""},
		{"unknown section field", "github", "issuer: https://ghes.acme.internal/_services/token\norganization_id: acme\nallow:\n  - repository: acme/app\n",
			"line 9: spec.github.organization_id is not a known field"},
		{"unknown allow-rule field", "github", "allow:\n  - repository: acme/app\n    repo_name: app\n",
			`line 10: allow[0]: unknown field "repo_name"`},
		{"gitlab field in a github rule", "github", "allow:\n  - project_path: acme/app\n",
			`line 9: allow[0]: unknown field "project_path"`},
		{"circleci rule field on the section", "circleci", "organization_id: " + circleciOrg + "\nproject_id: x\nallow:\n  - project_id: x\n",
			"line 9: spec.circleci.project_id is not a known field"},
		{"no allow rules", "gitlab", "issuer: https://gitlab.acme.internal\n", "line 8: spec.gitlab.allow: a join token needs at least one allow rule"},
		{"empty allow list", "gitlab", "allow: []\n", "needs at least one allow rule"},
		{"allow is not a list", "gitlab", "allow:\n  project_path: acme/app\n", "line 9: allow must be a list of rules"},
		{"empty rule value", "github", "allow:\n  - repository: \"\"\n", "line 9: allow[0].repository: empty value"},
		{"circleci without organization_id", "circleci", "allow:\n  - project_id: x\n", "organization_id is required"},
		{"static_jwks with a private key", "github", "static_jwks: '" + string(privateJWKS) + "'\nallow:\n  - repository: acme/app\n",
			`line 8: spec.github.static_jwks: key "leaked" is private`},
		{"static_jwks not JSON", "github", "static_jwks: '-----BEGIN PUBLIC KEY-----'\nallow:\n  - repository: acme/app\n",
			"line 8: spec.github.static_jwks: not a JWKS document"},
		{"static_jwks without keys", "github", "static_jwks: '{\"keys\": []}'\nallow:\n  - repository: acme/app\n",
			"line 8: spec.github.static_jwks: the JWKS has no keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := compile(t, tc.method, tc.section, newEnv(iss.Client))
			checkCompiled(t, v, err, tc.want)
		})
	}
	t.Run("no section", func(t *testing.T) {
		_, err := verify.Methods["github"].Compile(tokenName, nil, newEnv(nil))
		if err == nil || !strings.Contains(err.Error(), `"`+tokenName+`"`) || !strings.Contains(err.Error(), "spec.github") {
			t.Errorf("error %v should name the join token and the missing spec.github section", err)
		}
	})
}

func TestMethodNames(t *testing.T) {
	got := verify.MethodNames()
	for _, want := range []string{"circleci", "github", "gitlab"} {
		if _, ok := verify.Methods[want]; !ok {
			t.Errorf("method %s is not registered (have %v)", want, got)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Errorf("MethodNames %v is not sorted", got)
		}
	}
}

// verifyAndMatch runs one platform row: compile allow, mint claims, verify, match.
type ruleCase struct {
	name  string
	allow string // the allow: list, indented as under the section
	edit  func(c map[string]any)
	// wantCode is the Verify refusal; empty means Verify admits.
	wantCode identity.ErrorCode
	// wantMatch is the MatchRules verdict when Verify admits.
	wantMatch bool
	// wantInReason are fragments of the refusal message or mismatch reason.
	wantInReason []string
}

func runRuleCases(t *testing.T, p platform, alg jose.SignatureAlgorithm, cases []ruleCase) {
	t.Helper()
	runSectionRuleCases(t, p, func(issuer string) string {
		head := "issuer: " + issuer + "\n"
		if p.name == "circleci" {
			head += "organization_id: " + circleciOrg + "\n"
		}
		return head
	}, alg, cases)
}
