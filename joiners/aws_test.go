package joiners_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/joiners"
)

func TestAWSDetect(t *testing.T) {
	for _, signal := range []struct{ name, value string }{
		{"AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"},
		{"AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
		{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/8f1c2d3e"},
		{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"},
		{"AWS_EXECUTION_ENV", "AWS_ECS_FARGATE"},
	} {
		t.Run(signal.name, func(t *testing.T) {
			j, err := joiners.Detect(envOf(map[string]string{signal.name: signal.value}))
			if err != nil || j.Method() != "iam" {
				t.Fatalf("Detect with %s set: %v, %v; want iam", signal.name, j, err)
			}
		})
	}
	// A laptop with AWS credentials in its environment joins by iam; the
	// CI platforms still come first (TestDetect).
	if j, err := joiners.Detect(envOf(awsEnv)); err != nil || j.Method() != "iam" {
		t.Errorf("Detect with AWS credentials: %v, %v; want iam", j, err)
	}
	_, err := joiners.Detect(envOf(map[string]string{"AWS_REGION": "eu-west-1", "AWS_PROFILE": "dev"}))
	if err == nil || !strings.Contains(strings.Join(joiners.DetectionSignals(), ", "), "iam (AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE") {
		t.Errorf("Detect without credentials: %v; want an error naming what iam looks for", err)
	}
}

// awsTestEnv sets a job environment of the test credentials plus vars, with
// the machine's own AWS configuration out of the way. The SDK reads the
// process environment, so the tests set it.
func awsTestEnv(t *testing.T, vars map[string]string) {
	dir := t.TempDir()
	base := map[string]string{
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ACCESS_KEY_ID":           simci.STSAccessKeyID,
		"AWS_SECRET_ACCESS_KEY":       simci.STSSecretAccessKey,
		"AWS_SESSION_TOKEN":           simci.STSSessionToken,
	}
	for _, name := range []string{"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS",
		"AWS_USE_FIPS_ENDPOINT", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"} {
		base[name] = ""
	}
	for k, v := range merge(base, vars) {
		t.Setenv(k, v)
	}
}

func awsProof(t *testing.T, audience string) (identity.AWSSignedRequest, string) {
	t.Helper()
	j, err := joiners.ByMethod("iam")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := j.Proof(context.Background(), os.Getenv, audience)
	if err != nil {
		t.Fatalf("iam Proof: %v", err)
	}
	var p identity.AWSSignedRequest
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		t.Fatalf("the proof is not a signed request as JSON: %v\n%s", err, raw)
	}
	return p, raw
}

func TestAWSProofEndpoint(t *testing.T) {
	cases := []struct {
		name      string
		vars      map[string]string
		wantURL   string
		wantScope string // region in the credential scope
	}{
		{"regional", map[string]string{"AWS_REGION": "eu-west-1"}, "https://sts.eu-west-1.amazonaws.com/", "eu-west-1"},
		{"AWS_DEFAULT_REGION", map[string]string{"AWS_DEFAULT_REGION": "ap-southeast-2"}, "https://sts.ap-southeast-2.amazonaws.com/", "ap-southeast-2"},
		{"no region: the global endpoint", nil, "https://sts.amazonaws.com/", "us-east-1"},
		{"China", map[string]string{"AWS_REGION": "cn-north-1"}, "https://sts.cn-north-1.amazonaws.com.cn/", "cn-north-1"},
		{"FIPS", map[string]string{"AWS_REGION": "us-gov-west-1", "AWS_USE_FIPS_ENDPOINT": "true"}, "https://sts-fips.us-gov-west-1.amazonaws.com/", "us-gov-west-1"},
		{"AWS_ENDPOINT_URL_STS", map[string]string{"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_STS": "https://vpce-0a1b.sts.us-east-1.vpce.amazonaws.com",
			"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}, "https://vpce-0a1b.sts.us-east-1.vpce.amazonaws.com/", "us-east-1"},
		{"AWS_ENDPOINT_URL", map[string]string{"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}, "http://127.0.0.1:4566/", "eu-west-1"},
		{"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", map[string]string{"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:4566",
			"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, "https://sts.eu-west-1.amazonaws.com/", "eu-west-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			awsTestEnv(t, tc.vars)
			p, raw := awsProof(t, "acme")
			if p.URL != tc.wantURL {
				t.Errorf("URL %s, want %s", p.URL, tc.wantURL)
			}
			authz := strings.Join(p.Headers["Authorization"], ",")
			if want := "/" + tc.wantScope + "/sts/aws4_request,"; !strings.Contains(authz, want) {
				t.Errorf("Authorization %q does not sign for %s", authz, want)
			}
			if strings.Contains(raw, simci.STSSecretAccessKey) {
				t.Error("the proof carries the secret access key")
			}
		})
	}
}

func TestAWSProofBinding(t *testing.T) {
	sts, err := simci.StartSTS()
	if err != nil {
		t.Fatal(err)
	}
	defer sts.Close()
	awsTestEnv(t, sts.Env())
	p, _ := awsProof(t, "acme")
	if p.Method != http.MethodPost || p.Body != identity.AWSGetCallerIdentityBody {
		t.Errorf("request %s with body %q, want POST %q", p.Method, p.Body, identity.AWSGetCallerIdentityBody)
	}
	header := http.Header(p.Headers)
	if got := header.Get(identity.AWSAudienceHeader); got != "acme" {
		t.Errorf("%s = %q, want the authority's audience", identity.AWSAudienceHeader, got)
	}
	nonce := header.Get(identity.AWSNonceHeader)
	if len(nonce) < 32 {
		t.Errorf("%s = %q, want 128 random bits", identity.AWSNonceHeader, nonce)
	}
	authz := header.Get("Authorization")
	for _, h := range []string{"host", "x-amz-date", "x-amz-security-token", "x-mbot-audience", "x-mbot-nonce"} {
		if !strings.Contains(authz, h) {
			t.Errorf("SignedHeaders do not include %s: %s", h, authz)
		}
	}

	// The request is one STS accepts as it is: the stand-in checks the signature.
	req, err := http.NewRequest(p.Method, p.URL, strings.NewReader(p.Body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the STS stand-in answered %s to the signed request", resp.Status)
	}

	if again, _ := awsProof(t, "acme"); http.Header(again.Headers).Get(identity.AWSNonceHeader) == nonce {
		t.Error("two proofs carry the same nonce")
	}
}

func TestAWSProofErrors(t *testing.T) {
	t.Run("bad endpoint variable", func(t *testing.T) {
		awsTestEnv(t, map[string]string{"AWS_ENDPOINT_URL_STS": "sts.internal"})
		j, _ := joiners.ByMethod("iam")
		_, err := j.Proof(context.Background(), os.Getenv, "acme")
		if err == nil || !strings.Contains(err.Error(), "AWS_ENDPOINT_URL_STS") {
			t.Errorf("err = %v, want one naming AWS_ENDPOINT_URL_STS", err)
		}
	})
	t.Run("no audience", func(t *testing.T) {
		awsTestEnv(t, nil)
		j, _ := joiners.ByMethod("iam")
		if _, err := j.Proof(context.Background(), os.Getenv, ""); err == nil {
			t.Error("signed a request bound to no audience")
		}
	})
}
