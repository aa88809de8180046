package joiners

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/mbot-dev/mbot/identity"
)

// awsIAM proves the job's AWS identity with a signed sts:GetCallerIdentity
// request, which the authority forwards to STS. The request is signed with
// the default credential chain (environment, profile, web identity, ECS/EKS
// container credentials, EC2 instance role); the credentials are never sent.
type awsIAM struct{}

func init() { register(awsIAM{}, priorityAWS) }

func (awsIAM) Method() string { return "iam" }

// awsSignals are the variables that say the job has AWS credentials at hand.
// The EC2 instance role is not among them: asking IMDS would make detection
// wait for a timeout on every machine that is not on EC2; pass
// --join-method iam there.
var awsSignals = []string{
	"AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EXECUTION_ENV",
}

func (awsIAM) Signals() string { return strings.Join(awsSignals, ", ") }

func (awsIAM) Detect(env Env) bool {
	for _, name := range awsSignals {
		if env(name) != "" {
			return true
		}
	}
	return false
}

func (awsIAM) Proof(ctx context.Context, env Env, audience string) (string, error) {
	if audience == "" {
		return "", errors.New("the authority announced no audience to bind the signed request to")
	}
	// The SDK reads the credential chain's variables and files itself.
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the AWS configuration: %w", err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return "", fmt.Errorf("no AWS credentials (looked in the environment, ~/.aws, web identity, container credentials and the EC2 instance role): %w", err)
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return "", errors.New("the AWS credentials are anonymous; an iam join needs credentials of an IAM role or user")
	}
	endpoint, region, err := stsEndpoint(env, cfg.Region)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	body := identity.AWSGetCallerIdentityBody
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	// Set before signing, so that the signature covers them: the proof is
	// good for this authority and this join only.
	req.Header.Set(identity.AWSAudienceHeader, audience)
	req.Header.Set(identity.AWSNonceHeader, hex.EncodeToString(nonce))
	payload := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(payload[:]), "sts", region, time.Now()); err != nil {
		return "", fmt.Errorf("signing the GetCallerIdentity request: %w", err)
	}
	proof, err := json.Marshal(identity.AWSSignedRequest{Method: req.Method, URL: req.URL.String(), Headers: req.Header, Body: body})
	if err != nil {
		return "", err
	}
	return string(proof), nil
}

// stsEndpoint picks the STS endpoint and signing region: an endpoint from
// AWS_ENDPOINT_URL_STS or AWS_ENDPOINT_URL (VPC endpoints, tests), else the
// regional one (FIPS with AWS_USE_FIPS_ENDPOINT), else the global one.
func stsEndpoint(env Env, region string) (endpoint, signingRegion string, err error) {
	if region == "" {
		region = env("AWS_DEFAULT_REGION")
	}
	if !strings.EqualFold(env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), "true") {
		for _, name := range []string{"AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"} {
			raw := env(name)
			if raw == "" {
				continue
			}
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				return "", "", fmt.Errorf("%s=%q is not an http(s) URL", name, raw)
			}
			if region == "" {
				region = "us-east-1"
			}
			return u.Scheme + "://" + u.Host + "/", region, nil
		}
	}
	switch {
	case region == "":
		return "https://sts.amazonaws.com/", "us-east-1", nil
	case strings.EqualFold(env("AWS_USE_FIPS_ENDPOINT"), "true"):
		return "https://sts-fips." + region + ".amazonaws.com/", region, nil
	case strings.HasPrefix(region, "cn-"):
		return "https://sts." + region + ".amazonaws.com.cn/", region, nil
	}
	return "https://sts." + region + ".amazonaws.com/", region, nil
}
