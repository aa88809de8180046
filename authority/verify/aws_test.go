package verify_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/joiners"
)

// startSTS serves the STS stand-in, which checks SigV4 signatures with the
// test credentials as STS would, for the length of the test.
func startSTS(t *testing.T) *simci.STS {
	t.Helper()
	sts, err := simci.StartSTS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	return sts
}

// iamSection is spec.iam trusting the stand-in's caller and endpoint.
func iamSection(endpoint, rules string) string {
	s := "allow:\n" + rules
	if endpoint != "" {
		s += "sts_endpoints: [" + endpoint + "]\n"
	}
	return s
}

const iamRoleRule = "  - aws_account: \"123456789012\"\n    aws_arn: arn:aws:sts::123456789012:assumed-role/ci-deploy/*\n"

// awsEnv is the authority's environment on the real clock: the stand-in
// checks X-Amz-Date against it, as STS does.
func awsEnv() *verify.Env { return &verify.Env{Audience: "acme"} }

// awsJobEnv sets the environment of a job holding the test credentials with
// AWS_ENDPOINT_URL_STS pointing at the stand-in, and keeps the SDK away from
// the machine's own AWS configuration.
func awsJobEnv(t *testing.T, sts *simci.STS) {
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_PROFILE", "")
	for k, v := range sts.Env() {
		t.Setenv(k, v)
	}
}

// TestIAMJoin runs the client's iam joiner from a job's environment and
// verifies its proof through the stand-in.
func TestIAMJoin(t *testing.T) {
	sts := startSTS(t)
	awsJobEnv(t, sts)
	j, err := joiners.ByMethod("iam")
	if err != nil {
		t.Fatal(err)
	}
	proof, err := j.Proof(context.Background(), os.Getenv, "acme")
	if err != nil {
		t.Fatalf("iam Proof: %v", err)
	}
	if strings.Contains(proof, simci.STSSecretAccessKey) {
		t.Fatal("the proof carries the secret access key")
	}
	v := mustCompile(t, "iam", iamSection(sts.URL, iamRoleRule), awsEnv())
	adm, err := v.Verify(context.Background(), proof)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := policy.Claims{"aws_account": {simci.STSAccount}, "aws_arn": {simci.STSArn}, "aws_user_id": {simci.STSUserID}}
	if adm.Claims.String() != want.String() {
		t.Errorf("claims %s, want %s", adm.Claims, want)
	}
	if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
		t.Errorf("the rule does not admit the stand-in's caller: %s", why)
	}
	if d := time.Until(adm.UsableUntil); d < 14*time.Minute || d > 16*time.Minute {
		t.Errorf("UsableUntil is %s away, want 15m after signing", d.Round(time.Second))
	}
	if sts.Requests() != 1 {
		t.Errorf("the stand-in got %d requests, want 1", sts.Requests())
	}

	// A replay is the same signature, however the JSON around it is written.
	var p identity.AWSSignedRequest
	if err := json.Unmarshal([]byte(proof), &p); err != nil {
		t.Fatal(err)
	}
	lower := map[string][]string{}
	for k, vals := range p.Headers {
		lower[strings.ToLower(k)] = vals
	}
	p.Headers = lower
	rewritten, _ := json.MarshalIndent(p, "", "  ")
	again, err := v.Verify(context.Background(), string(rewritten))
	if err != nil {
		t.Fatalf("Verify of the same signed request, rewritten: %v", err)
	}
	if again.ProofID != adm.ProofID {
		t.Error("the same signature rewritten has another proof ID; the join path would accept it twice")
	}

	// Another proof from the same job is a new signature (fresh nonce).
	second, err := j.Proof(context.Background(), os.Getenv, "acme")
	if err != nil {
		t.Fatal(err)
	}
	adm2, err := v.Verify(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	if adm2.ProofID == adm.ProofID {
		t.Error("two signed requests have one proof ID")
	}
}

// awsProof describes a signed GetCallerIdentity request made by hand, to
// present what the client would never send.
type awsProof struct {
	url      string
	body     string
	audience string
	signedAt time.Time
	secret   string
	// before edits the headers before signing, after the signed request.
	before func(h http.Header)
	after  func(p *identity.AWSSignedRequest)
}

func (o awsProof) sign(t *testing.T) string {
	t.Helper()
	if o.body == "" {
		o.body = identity.AWSGetCallerIdentityBody
	}
	if o.audience == "" {
		o.audience = "acme"
	}
	if o.signedAt.IsZero() {
		o.signedAt = time.Now()
	}
	if o.secret == "" {
		o.secret = simci.STSSecretAccessKey
	}
	req, err := http.NewRequest(http.MethodPost, o.url, strings.NewReader(o.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set(identity.AWSAudienceHeader, o.audience)
	req.Header.Set(identity.AWSNonceHeader, "4b1c0e5f2d8a7b6c9e0f1a2b3c4d5e6f")
	if o.before != nil {
		o.before(req.Header)
	}
	sum := sha256.Sum256([]byte(o.body))
	creds := aws.Credentials{AccessKeyID: simci.STSAccessKeyID, SecretAccessKey: o.secret, SessionToken: simci.STSSessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "sts", "us-east-1", o.signedAt); err != nil {
		t.Fatal(err)
	}
	p := identity.AWSSignedRequest{Method: req.Method, URL: req.URL.String(), Headers: req.Header, Body: o.body}
	if o.after != nil {
		o.after(&p)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestIAMRefusals(t *testing.T) {
	sts := startSTS(t)
	unsign := func(header string) func(p *identity.AWSSignedRequest) {
		// Present the header, but outside the signature.
		return func(p *identity.AWSSignedRequest) {
			p.Headers[header] = []string{map[string]string{identity.AWSAudienceHeader: "acme", identity.AWSNonceHeader: "4b1c0e5f2d8a7b6c9e0f1a2b3c4d5e6f"}[header]}
		}
	}
	cases := []struct {
		name string
		// endpoint is the join token's sts_endpoints entry ("-": none).
		endpoint string
		proof    awsProof
		// raw replaces the proof when set.
		raw       string
		wantCode  identity.ErrorCode
		wantInMsg []string
		// wantSTS says whether the request may reach the stand-in.
		wantSTS bool
	}{
		{
			name: "endpoint not on the join token's list", endpoint: "-",
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"not an AWS STS endpoint", sts.URL, "sts_endpoints"},
		},
		{
			name: "look-alike host", proof: awsProof{url: "https://sts.us-east-1.amazonaws.com.evil.example/"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"https://sts.us-east-1.amazonaws.com.evil.example", "not an AWS STS endpoint"},
		},
		{
			name: "metadata service", proof: awsProof{url: "http://169.254.169.254/"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"not an AWS STS endpoint"},
		},
		{
			name: "plain http to AWS", proof: awsProof{url: "http://sts.amazonaws.com/"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"http://sts.amazonaws.com", "not an AWS STS endpoint"},
		},
		{
			name: "another port of an AWS host", proof: awsProof{url: "https://sts.amazonaws.com:8443/"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"not an AWS STS endpoint"},
		},
		{
			name: "listed endpoint with another path", proof: awsProof{url: sts.URL + "/admin"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"no path or query"},
		},
		{
			name: "listed endpoint with a query", proof: awsProof{url: sts.URL + "/?Action=AssumeRole"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"no path or query"},
		},
		{
			name: "nonce outside the signature", proof: awsProof{before: func(h http.Header) { h.Del(identity.AWSNonceHeader) }, after: unsign(identity.AWSNonceHeader)},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"does not cover the x-mbot-nonce header", "SignedHeaders="},
		},
		{
			name: "audience outside the signature", proof: awsProof{before: func(h http.Header) { h.Del(identity.AWSAudienceHeader) }, after: unsign(identity.AWSAudienceHeader)},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"does not cover the x-mbot-audience header"},
		},
		{
			name: "no audience at all", proof: awsProof{before: func(h http.Header) { h.Del(identity.AWSAudienceHeader) }},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"x-mbot-audience"},
		},
		{
			name: "short nonce", proof: awsProof{before: func(h http.Header) { h.Set(identity.AWSNonceHeader, "1") }},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"X-Mbot-Nonce"},
		},
		{
			name: "body changed after signing",
			proof: awsProof{after: func(p *identity.AWSSignedRequest) {
				p.Body = "Action=GetCallerIdentity&Version=2011-06-15&Extra=1"
			}},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"body", "only \"Action=GetCallerIdentity&Version=2011-06-15\""},
		},
		{
			name: "another action, signed", proof: awsProof{body: "Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam::123456789012:role/admin"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"Action=AssumeRole"},
		},
		{
			name: "wrong audience", proof: awsProof{audience: "other-cluster"},
			wantCode: identity.CodeWrongAudience, wantInMsg: []string{`"other-cluster"`, `"acme"`},
		},
		{
			name: "signed too long ago", proof: awsProof{signedAt: time.Now().Add(-6 * time.Minute)},
			wantCode: identity.CodeProofExpired, wantInMsg: []string{"ago", "5m0s"},
		},
		{
			name: "signed in the future", proof: awsProof{signedAt: time.Now().Add(10 * time.Minute)},
			wantCode: identity.CodeProofNotYetValid, wantInMsg: []string{"in the future"},
		},
		{
			name: "tampered signature",
			proof: awsProof{after: func(p *identity.AWSSignedRequest) {
				a := p.Headers["Authorization"][0]
				last := a[len(a)-1]
				flip := byte('0')
				if last == '0' {
					flip = '1'
				}
				p.Headers["Authorization"] = []string{a[:len(a)-1] + string(flip)}
			}},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"SignatureDoesNotMatch"}, wantSTS: true,
		},
		{
			name: "signed with another secret key", proof: awsProof{secret: "not-the-secret-key"},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"AWS STS", "SignatureDoesNotMatch"}, wantSTS: true,
		},
		{
			name: "signed header changed after signing",
			proof: awsProof{after: func(p *identity.AWSSignedRequest) {
				p.Headers["Content-Type"] = []string{"application/json"}
			}},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"SignatureDoesNotMatch"}, wantSTS: true,
		},
		{
			name: "Host header", proof: awsProof{after: func(p *identity.AWSSignedRequest) { p.Headers["host"] = []string{"169.254.169.254"} }},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"Host header"},
		},
		{
			name: "header smuggling", proof: awsProof{after: func(p *identity.AWSSignedRequest) {
				p.Headers["X-Forwarded-For"] = []string{"1.2.3.4\r\nX-Amz-Target: AssumeRole"}
			}},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"not a valid HTTP header"},
		},
		{
			name: "GET", proof: awsProof{after: func(p *identity.AWSSignedRequest) { p.Method = "GET" }},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"POST"},
		},
		{
			name: "not SigV4", proof: awsProof{after: func(p *identity.AWSSignedRequest) { p.Headers["Authorization"] = []string{"Bearer abc"} }},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"AWS4-HMAC-SHA256"},
		},
		{
			name: "signed for another service",
			proof: awsProof{after: func(p *identity.AWSSignedRequest) {
				p.Headers["Authorization"] = []string{strings.Replace(p.Headers["Authorization"][0], "/sts/", "/s3/", 1)}
			}},
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"sts service"},
		},
		{
			name: "an OIDC token instead", raw: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln",
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"not a signed AWS request"},
		},
		{
			name: "unknown fields", raw: `{"method":"POST","url":"x","headers":{},"body":"","credentials":"AKIA"}`,
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"not a signed AWS request"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := sts.URL
			if tc.endpoint == "-" {
				endpoint = ""
			}
			v := mustCompile(t, "iam", iamSection(endpoint, iamRoleRule), awsEnv())
			proof := tc.raw
			if proof == "" {
				if tc.proof.url == "" {
					tc.proof.url = sts.URL + "/"
				}
				proof = tc.proof.sign(t)
			}
			before := sts.Requests()
			adm, err := v.Verify(context.Background(), proof)
			t.Logf("refused: %v", err)
			wantRefusal(t, err, tc.wantCode, tc.wantInMsg...)
			if adm != nil {
				t.Errorf("a refusal came with an admission: %+v", adm)
			}
			switch got := sts.Requests() - before; {
			case !tc.wantSTS && got != 0:
				t.Errorf("the stand-in got %d requests; this proof must be refused before anything is sent", got)
			case tc.wantSTS && got != 1:
				t.Errorf("the stand-in got %d requests, want 1 (the refusal must be STS's)", got)
			}
		})
	}
}

// TestIAMRules matches the caller STS names against aws_account and aws_arn.
func TestIAMRules(t *testing.T) {
	sts := startSTS(t)
	cases := []struct {
		name, rules  string
		wantMatch    bool
		wantInReason []string
	}{
		{name: "account", rules: "  - aws_account: \"123456789012\"\n", wantMatch: true},
		{name: "account and role glob", rules: iamRoleRule, wantMatch: true},
		{name: "exact ARN", rules: "  - aws_arn: " + simci.STSArn + "\n", wantMatch: true},
		{name: "other account", rules: "  - aws_account: \"210987654321\"\n",
			wantInReason: []string{"aws_account wants 210987654321, token has 123456789012"}},
		{name: "other role", rules: "  - aws_account: \"123456789012\"\n    aws_arn: arn:aws:sts::123456789012:assumed-role/admin/*\n",
			wantInReason: []string{"aws_arn wants arn:aws:sts::123456789012:assumed-role/admin/*, token has " + simci.STSArn}},
		{name: "role name prefix does not match another role", rules: "  - aws_arn: arn:aws:sts::123456789012:assumed-role/ci/*\n",
			wantInReason: []string{"aws_arn wants"}},
		{name: "any of several rules", rules: "  - aws_account: \"210987654321\"\n  - aws_arn: \"arn:aws:sts::123456789012:assumed-role/ci-*/*\"\n", wantMatch: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := mustCompile(t, "iam", iamSection(sts.URL, tc.rules), awsEnv())
			adm, err := v.Verify(context.Background(), awsProof{url: sts.URL + "/"}.sign(t))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			ok, why := policy.MatchRules(v.Rules(), adm.Claims)
			if ok != tc.wantMatch {
				t.Fatalf("match = %v (%s), want %v", ok, why, tc.wantMatch)
			}
			for _, f := range tc.wantInReason {
				if !strings.Contains(why.String(), f) {
					t.Errorf("reason does not mention %q: %s", f, why)
				}
			}
		})
	}
}

// TestIAMSTSTrouble covers STS answers that are not the caller's fault or
// try to send the authority elsewhere.
func TestIAMSTSTrouble(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(target.Close)
	cases := []struct {
		name      string
		handler   http.HandlerFunc
		wantCode  identity.ErrorCode
		wantInMsg []string
	}{
		{"STS fails", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`<ErrorResponse><Error><Code>ServiceUnavailable</Code><Message>try later</Message></Error></ErrorResponse>`))
		}, identity.CodeIssuerUnavailable, []string{"ServiceUnavailable: try later"}},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/", http.StatusTemporaryRedirect)
		}, identity.CodeProofInvalid, []string{"307"}},
		{"not STS's XML", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"Account":"123456789012"}`))
		}, identity.CodeProofInvalid, []string{"without a caller identity"}},
		{"account and ARN disagree", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::999999999999:assumed-role/ci-deploy/x</Arn><UserId>AROA:x</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>`))
		}, identity.CodeProofInvalid, []string{"do not go together"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			v := mustCompile(t, "iam", iamSection(srv.URL, iamRoleRule), awsEnv())
			_, err := v.Verify(context.Background(), awsProof{url: srv.URL + "/"}.sign(t))
			wantRefusal(t, err, tc.wantCode, tc.wantInMsg...)
		})
	}
	if elsewhere.Load() != 0 {
		t.Errorf("the authority followed a redirect away from the checked endpoint")
	}
}

func TestIAMSectionErrors(t *testing.T) {
	cases := []struct {
		name, section, want string
	}{
		{"no rules", "sts_endpoints: [https://vpce-1.sts.us-east-1.vpce.amazonaws.com]\n", "line 8: spec.iam.allow: a join token needs at least one allow rule (fields: aws_account, aws_arn)"},
		{"unknown rule field", "allow:\n  - aws_role: ci\n", `line 9: allow[0]: unknown field "aws_role"`},
		{"unknown section field", "allow:\n  - aws_account: \"123456789012\"\nregion: us-east-1\n", "line 10: spec.iam.region is not a known field"},
		{"plain http to a remote endpoint", "allow:\n  - aws_account: \"123456789012\"\nsts_endpoints:\n  - https://vpce-1.sts.us-east-1.vpce.amazonaws.com\n  - http://sts.internal.example\n",
			"line 12: spec.iam.sts_endpoints[1]: \"http://sts.internal.example\": plain http is allowed only for a loopback address"},
		{"endpoint with a path", "allow:\n  - aws_account: \"123456789012\"\nsts_endpoints: [https://proxy.example/sts]\n", "must be https://host[:port]"},
		{"another scheme", "allow:\n  - aws_account: \"123456789012\"\nsts_endpoints: [\"ftp://sts.example\"]\n", "the scheme must be https"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compile(t, "iam", tc.section, awsEnv())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// A bare host name is an https endpoint.
	mustCompile(t, "iam", "allow:\n  - aws_account: \"123456789012\"\nsts_endpoints: [vpce-1.sts.us-east-1.vpce.amazonaws.com, \"http://127.0.0.1:4566\", \"http://[::1]:4566\"]\n", awsEnv())
}

// TestIAMCodeBuild marks the caller of a CodeBuild build, which STS names
// in the role session AWSCodeBuild-<build id>, as CodeBuild's; other
// callers carry no ci_platform.
func TestIAMCodeBuild(t *testing.T) {
	sts := startSTS(t)
	v := mustCompile(t, "iam", iamSection(sts.URL, "  - aws_account: \"123456789012\"\n    aws_arn: arn:aws:sts::123456789012:assumed-role/codebuild-deploy/*\n"), awsEnv())
	adm, err := v.Verify(context.Background(), awsProof{url: sts.URL + "/"}.sign(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := adm.Claims["ci_platform"]; got != nil {
		t.Errorf("an EC2 instance role's caller has ci_platform %v", got)
	}
	sts.SetCaller(simci.CodeBuildArn, simci.CodeBuildUserID)
	adm, err = v.Verify(context.Background(), awsProof{url: sts.URL + "/"}.sign(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := adm.Claims["ci_platform"]; len(got) != 1 || got[0] != "codebuild" {
		t.Errorf("CodeBuild's caller has ci_platform %v, want codebuild", got)
	}
	if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
		t.Errorf("the CodeBuild role's rule refuses the build: %s", why)
	}
}
