package simci

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Test credentials the STS stand-in knows (AWS's documentation example key
// pair, with a session token as assumed-role credentials carry).
const (
	STSAccessKeyID     = "ASIAIOSFODNN7EXAMPLE"
	STSSecretAccessKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	STSSessionToken    = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
	STSAccount         = "123456789012"
	STSArn             = "arn:aws:sts::123456789012:assumed-role/ci-deploy/i-0123456789abcdef0"
	STSUserID          = "AROAEXAMPLEROLEID1234:i-0123456789abcdef0"
	// CodeBuildArn and CodeBuildUserID are the caller of a CodeBuild build,
	// whose service role CodeBuild assumes in session AWSCodeBuild-<build id>.
	CodeBuildArn    = "arn:aws:sts::123456789012:assumed-role/codebuild-deploy/AWSCodeBuild-6a3c1f2e-0000-4000-8000-00000000cb01"
	CodeBuildUserID = "AROAEXAMPLECODEBUILD1:AWSCodeBuild-6a3c1f2e-0000-4000-8000-00000000cb01"
)

// STS is a loopback stand-in for AWS STS's GetCallerIdentity. Like STS, it
// recomputes the SigV4 signature of each request with the secret key it
// knows for the access key, refuses a mismatch with SignatureDoesNotMatch,
// and answers in STS's XML. It stands in for a cloud service that cannot
// run here; nothing else about AWS is simulated.
type STS struct {
	URL string
	srv *http.Server

	mu       sync.Mutex
	requests int
	// arn and userID are the caller GetCallerIdentity names (STSArn, STSUserID).
	arn, userID string
}

// SetCaller makes the stand-in answer as if the credentials were those of
// arn (CodeBuildArn, to play a CodeBuild build).
func (s *STS) SetCaller(arn, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.arn, s.userID = arn, userID
}

// StartSTS serves the stand-in on 127.0.0.1 over plain http.
func StartSTS() (*STS, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &STS{URL: "http://" + ln.Addr().String(), arn: STSArn, userID: STSUserID}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the stand-in.
func (s *STS) Close() error { return s.srv.Close() }

// Requests is how many requests reached the stand-in.
func (s *STS) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Env is the environment of a job holding the test credentials and
// pointing the SDK at the stand-in.
func (s *STS) Env() map[string]string {
	return map[string]string{
		"AWS_ACCESS_KEY_ID":     STSAccessKeyID,
		"AWS_SECRET_ACCESS_KEY": STSSecretAccessKey,
		"AWS_SESSION_TOKEN":     STSSessionToken,
		"AWS_REGION":            "us-east-1",
		"AWS_ENDPOINT_URL_STS":  s.URL,
		// Never fall through to the EC2 metadata service from a test.
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	arn, userID := s.arn, s.userID
	s.mu.Unlock()
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		stsError(w, http.StatusBadRequest, "InvalidRequest", "unreadable body")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		stsError(w, http.StatusBadRequest, "InvalidAction", "Could not find operation for "+r.Method+" "+r.URL.Path)
		return
	}
	if code, msg := checkSigV4(r, body); code != "" {
		stsError(w, http.StatusForbidden, code, msg)
		return
	}
	if string(body) != "Action=GetCallerIdentity&Version=2011-06-15" {
		stsError(w, http.StatusBadRequest, "InvalidAction", "Could not find operation for "+string(body))
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>%s</Arn>
    <UserId>%s</UserId>
    <Account>%s</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
`, html.EscapeString(arn), html.EscapeString(userID), STSAccount)
}

// checkSigV4 verifies the request's signature the way STS does: it signs
// the received request again, over the headers the client says it signed,
// with the secret key of the access key, and compares the signatures.
func checkSigV4(r *http.Request, body []byte) (code, message string) {
	const algorithm = "AWS4-HMAC-SHA256 "
	authz := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(authz, algorithm)
	if !ok {
		return "IncompleteSignature", "Authorization header requires the AWS4-HMAC-SHA256 algorithm"
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || fields["SignedHeaders"] == "" || fields["Signature"] == "" {
		return "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature"
	}
	if scope[0] != STSAccessKeyID {
		return "InvalidClientTokenId", "The security token included in the request is invalid."
	}
	if r.Header.Get("X-Amz-Security-Token") != STSSessionToken {
		return "InvalidClientTokenId", "The security token included in the request is invalid."
	}
	signedAt, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "IncompleteSignature", "X-Amz-Date is missing or malformed"
	}
	if d := time.Since(signedAt); d > 15*time.Minute || d < -15*time.Minute {
		return "SignatureDoesNotMatch", "Signature expired: " + r.Header.Get("X-Amz-Date") + " is now earlier than the allowed 15 minutes"
	}
	if scope[1] != signedAt.Format("20060102") || scope[3] != "sts" {
		return "SignatureDoesNotMatch", "Credential should be scoped to a valid date and the sts service"
	}

	again, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), strings.NewReader(string(body)))
	if err != nil {
		return "IncompleteSignature", err.Error()
	}
	again.ContentLength = 0
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			again.ContentLength = r.ContentLength
		default:
			vals := r.Header.Values(h)
			if len(vals) == 0 {
				return "SignatureDoesNotMatch", "signed header " + h + " is not in the request"
			}
			again.Header[http.CanonicalHeaderKey(h)] = vals
		}
	}
	payload := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: STSAccessKeyID, SecretAccessKey: STSSecretAccessKey, SessionToken: STSSessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(payload[:]), scope[3], scope[2], signedAt); err != nil {
		return "InternalFailure", err.Error()
	}
	want := again.Header.Get("Authorization")
	wantSig := want[strings.LastIndex(want, "Signature=")+len("Signature="):]
	got, _ := hex.DecodeString(fields["Signature"])
	expected, _ := hex.DecodeString(wantSig)
	if !hmac.Equal(got, expected) || !strings.Contains(want, "SignedHeaders="+fields["SignedHeaders"]+",") {
		return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. " +
			"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	}
	return "", ""
}

func stsError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>%s</Code>
    <Message>%s</Message>
  </Error>
  <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
</ErrorResponse>
`, html.EscapeString(code), html.EscapeString(message))
}
