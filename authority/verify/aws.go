package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
	"gopkg.in/yaml.v3"
)

// The iam method's proof is a GetCallerIdentity request signed with the
// job's AWS credentials. Only STS can check a SigV4 signature, so the
// authority checks everything it can itself (where the request goes, what it
// asks, that it is bound to this authority and fresh), forwards it to STS as
// it is, and admits the identity STS answers with.

const (
	// awsMaxSkew is how far X-Amz-Date may be from the authority's clock:
	// the client signs right before joining.
	awsMaxSkew = 5 * time.Minute
	// awsSignatureLifetime is how long STS accepts a signature after its
	// X-Amz-Date; the replay record is kept that long.
	awsSignatureLifetime = 15 * time.Minute
	// awsMaxProof bounds the proof: a signed request is about 2 KiB, 4 KiB
	// with a session token.
	awsMaxProof = 32 << 10
	stsTimeout  = 10 * time.Second
)

// awsRegion matches the shape of AWS region names (us-east-1,
// ap-southeast-5, us-gov-west-1, cn-north-1), so that only hosts AWS serves
// STS on pass as STS endpoints.
var awsRegion = lazyregexp.New(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$`)

// iamSection is spec.iam of a join token.
type iamSection struct {
	Allow yaml.Node `yaml:"allow"`
	// STSEndpoints are extra endpoints the proof may be sent to: VPC
	// endpoints and, on loopback only over http, test stand-ins.
	STSEndpoints []string `yaml:"sts_endpoints"`
}

type iamMethod struct{}

func init() { register(iamMethod{}) }

func (iamMethod) Name() string { return "iam" }

// codeBuildSession is the role session CodeBuild assumes a build's service
// role in: arn:aws:sts::<account>:assumed-role/<role>/AWSCodeBuild-<build id>.
var codeBuildSession = lazyregexp.New(`^arn:aws[a-z-]*:sts::[0-9]{12}:assumed-role/[^/]+/AWSCodeBuild-[0-9a-fA-F-]+$`)

var iamRuleFields = []string{"aws_account", "aws_arn"}

// awsAccountID is an AWS account id: twelve digits.
var awsAccountID = lazyregexp.New(`^[0-9]{12}$`)

// iamScope: STS answers for every AWS account, so a rule names the account,
// alone or as the account part of an ARN.
var iamScope = &policy.OwnerScope{
	Issuer: "STS vouches for the callers of every AWS account",
	Fields: []policy.OwnerField{
		{Name: "aws_account", Pins: awsAccountID.MatchString, Shape: "a 12-digit account id, no globs", Example: "<your 12-digit account id>"},
		{Name: "aws_arn", Pins: arnPinsAccount, Shape: "arn:aws:iam::123456789012:role/deploy or arn:aws:sts::123456789012:assumed-role/deploy/*"},
	},
}

// arnPinsAccount accepts an ARN pattern whose partition, service, region and
// account parts are written out before any glob, the account as 12 digits.
func arnPinsAccount(p string) bool {
	if policy.IsLiteral(p) {
		return true
	}
	parts := strings.SplitN(policy.LiteralPrefix(p), ":", 6)
	return len(parts) == 6 && parts[0] == "arn" && awsAccountID.MatchString(parts[4])
}

func (iamMethod) Compile(tokenName string, section *yaml.Node, env *Env) (Verifier, error) {
	if section == nil {
		return nil, fmt.Errorf("join token %q has method iam but no spec.iam section with allow rules", tokenName)
	}
	if err := checkKeys(section, "spec.iam", []string{"allow", "sts_endpoints"}); err != nil {
		return nil, err
	}
	var s iamSection
	if err := section.Decode(&s); err != nil {
		return nil, err
	}
	rules, err := policy.ParseAllowRules(&s.Allow, iamRuleFields)
	if s.Allow.Kind == 0 {
		rules, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("line %d: spec.iam.allow: a join token needs at least one allow rule (fields: %s)",
			section.Line, strings.Join(iamRuleFields, ", "))
	}
	if err := iamScope.Check(rules); err != nil {
		return nil, err
	}
	v := &iamVerifier{tokenName: tokenName, env: env, rules: rules}
	for i, e := range s.STSEndpoints {
		ep, err := parseSTSEndpoint(e)
		if err != nil {
			line := section.Line
			if n := resources.Lookup(section, "sts_endpoints"); n != nil && i < len(n.Content) {
				line = n.Content[i].Line
			}
			return nil, fmt.Errorf("line %d: spec.iam.sts_endpoints[%d]: %v", line, i, err)
		}
		v.extraEndpoints = append(v.extraEndpoints, ep)
	}
	return v, nil
}

// stsEndpoint is where a proof may be sent: a scheme and a host[:port].
type stsEndpoint struct{ scheme, host string }

// parseSTSEndpoint reads an sts_endpoints entry: a URL, or a host for https.
func parseSTSEndpoint(s string) (stsEndpoint, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return stsEndpoint{}, fmt.Errorf("%q is not a URL or host name", s)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return stsEndpoint{}, fmt.Errorf("%q must be https://host[:port] with no path, user or query", s)
	}
	if err := checkRemoteURL(s); err != nil {
		return stsEndpoint{}, err
	}
	return stsEndpoint{scheme: u.Scheme, host: strings.ToLower(u.Host)}, nil
}

// isAWSSTSHost reports whether host is one of the STS endpoints AWS serves:
// the global one, regional ones, FIPS ones and those of the China regions.
func isAWSSTSHost(host string) bool {
	if host == "sts.amazonaws.com" {
		return true
	}
	if region, ok := strings.CutPrefix(host, "sts."); ok {
		if r, ok := strings.CutSuffix(region, ".amazonaws.com.cn"); ok {
			return strings.HasPrefix(r, "cn-") && awsRegion.MatchString(r)
		}
		if r, ok := strings.CutSuffix(region, ".amazonaws.com"); ok {
			return awsRegion.MatchString(r)
		}
	}
	if r, ok := strings.CutPrefix(host, "sts-fips."); ok {
		if r, ok := strings.CutSuffix(r, ".amazonaws.com"); ok {
			return awsRegion.MatchString(r)
		}
	}
	return false
}

type iamVerifier struct {
	tokenName      string
	env            *Env
	rules          []policy.AllowRule
	extraEndpoints []stsEndpoint
}

func (v *iamVerifier) Rules() []policy.AllowRule { return v.rules }

// sigV4Auth is a parsed AWS4-HMAC-SHA256 Authorization header.
type sigV4Auth struct {
	signedHeaders []string
	signature     string
}

func (v *iamVerifier) refuse(code identity.ErrorCode, format string, args ...any) error {
	return identity.Errorf(code, "join token %q: %s", v.tokenName, fmt.Sprintf(format, args...))
}

func (v *iamVerifier) Verify(ctx context.Context, proof string) (*Admission, error) {
	checked, err := v.checkRequest(proof)
	if err != nil {
		return nil, err
	}
	caller, err := v.callSTS(ctx, checked.req)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte("iam\x00" + checked.signature))
	claims := policy.Claims{
		"aws_account": {caller.Account},
		"aws_arn":     {caller.Arn},
		"aws_user_id": {caller.UserID},
	}
	if codeBuildSession.MatchString(caller.Arn) {
		// STS says so, not the client: for the audit record.
		claims["ci_platform"] = []string{"codebuild"}
	}
	return &Admission{
		Claims:      claims,
		ProofID:     hex.EncodeToString(sum[:]),
		UsableUntil: checked.signedAt.Add(awsSignatureLifetime),
	}, nil
}

// checkedRequest is a proof that passed every check the authority can make
// itself, ready to forward to STS.
type checkedRequest struct {
	req       *http.Request
	signature string // lower-case hex
	signedAt  time.Time
}

// checkRequest checks the signed request before anything is sent: where it
// goes, what it asks, and that it is bound to this authority and fresh. It
// returns the request to forward.
func (v *iamVerifier) checkRequest(proof string) (*checkedRequest, error) {
	if len(proof) > awsMaxProof {
		return nil, v.refuse(identity.CodeProofInvalid, "the proof is %d bytes, more than a signed GetCallerIdentity request (at most %d)", len(proof), awsMaxProof)
	}
	var p identity.AWSSignedRequest
	dec := json.NewDecoder(strings.NewReader(proof))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, v.refuse(identity.CodeProofInvalid, "the proof is not a signed AWS request as mbot issue --join-method iam sends it (%v)", err)
	}
	if p.Method != http.MethodPost {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request is a %q request; GetCallerIdentity is sent as POST", p.Method)
	}
	u, err := v.checkURL(p.URL)
	if err != nil {
		return nil, err
	}
	if p.Body != identity.AWSGetCallerIdentityBody {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request's body is %q; only %q is accepted",
			truncate(p.Body, 80), identity.AWSGetCallerIdentityBody)
	}
	header := http.Header{}
	for k, vals := range p.Headers {
		if !headerName.MatchString(k) || slices.ContainsFunc(vals, func(val string) bool { return strings.ContainsAny(val, "\r\n\x00") }) {
			return nil, v.refuse(identity.CodeProofInvalid, "the signed request's header %q is not a valid HTTP header", truncate(k, 40))
		}
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Host" {
			return nil, v.refuse(identity.CodeProofInvalid, "the signed request carries a Host header; the host is the URL's")
		}
		header[ck] = append(header[ck], vals...)
	}
	auth, err := v.parseAuthorization(header.Values("Authorization"))
	if err != nil {
		return nil, err
	}
	for _, h := range []string{"host", "x-amz-date", strings.ToLower(identity.AWSAudienceHeader), strings.ToLower(identity.AWSNonceHeader)} {
		if !slices.Contains(auth.signedHeaders, h) {
			return nil, v.refuse(identity.CodeProofInvalid,
				"the request's signature does not cover the %s header (SignedHeaders=%s), so it is not bound to this authority and join; sign it with mbot issue --join-method iam",
				h, strings.Join(auth.signedHeaders, ";"))
		}
	}
	if got := header.Values(identity.AWSAudienceHeader); len(got) != 1 || got[0] != v.env.Audience {
		return nil, v.refuse(identity.CodeWrongAudience, "the signed request is for audience %q, but this authority's audience is %q; sign it for %q (mbot issue does, from the authority's ping)",
			strings.Join(got, ","), v.env.Audience, v.env.Audience)
	}
	if got := header.Values(identity.AWSNonceHeader); len(got) != 1 || len(got[0]) < 16 {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request's %s header must be one random value of at least 16 characters", identity.AWSNonceHeader)
	}
	signedAt, err := time.Parse("20060102T150405Z", header.Get("X-Amz-Date"))
	if err != nil {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request's X-Amz-Date %q is not a SigV4 time like 20250602T103000Z", header.Get("X-Amz-Date"))
	}
	now := v.env.now()
	if now.Sub(signedAt) > awsMaxSkew {
		return nil, v.refuse(identity.CodeProofExpired, "the request was signed at %s, %s ago; the authority accepts signatures up to %s old: sign right before joining and check the job's clock",
			signedAt.Format(time.RFC3339), now.Sub(signedAt).Round(time.Second), awsMaxSkew)
	}
	if signedAt.Sub(now) > awsMaxSkew {
		return nil, v.refuse(identity.CodeProofNotYetValid, "the request was signed at %s, %s in the future; check the clocks of the job and the authority",
			signedAt.Format(time.RFC3339), signedAt.Sub(now).Round(time.Second))
	}

	// Only what the signature covers (and the signature) reaches STS.
	forward := http.Header{"Authorization": header.Values("Authorization")}
	for _, h := range auth.signedHeaders {
		if h == "host" || h == "content-length" {
			continue // net/http writes both from the URL and the body
		}
		ck := textproto.CanonicalMIMEHeaderKey(h)
		forward[ck] = header.Values(ck)
	}
	req, err := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(p.Body))
	if err != nil {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request cannot be sent: %v", err)
	}
	req.Header = forward
	return &checkedRequest{req: req, signature: auth.signature, signedAt: signedAt}, nil
}

// checkURL admits only STS endpoints, so the authority cannot be made to
// send requests anywhere else.
func (v *iamVerifier) checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request's URL %q is not an absolute URL", truncate(raw, 120))
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, v.refuse(identity.CodeProofInvalid, "the signed request goes to %q; GetCallerIdentity is sent to the STS endpoint's root, with no path or query", truncate(raw, 120))
	}
	host := strings.ToLower(u.Host)
	allowed := u.Scheme == "https" && isAWSSTSHost(strings.TrimSuffix(host, ":443"))
	for _, e := range v.extraEndpoints {
		allowed = allowed || (u.Scheme == e.scheme && host == e.host)
	}
	if !allowed {
		return nil, v.refuse(identity.CodeProofInvalid,
			"the signed request goes to %s://%s, which is not an AWS STS endpoint; mbot sends proofs only to sts[-fips].<region>.amazonaws.com[.cn] "+
				"and to the join token's spec.iam.sts_endpoints (add a VPC endpoint there)", u.Scheme, u.Host)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/"}, nil
}

// parseAuthorization reads "AWS4-HMAC-SHA256 Credential=AKID/date/region/sts/aws4_request,
// SignedHeaders=a;b, Signature=hex".
func (v *iamVerifier) parseAuthorization(values []string) (*sigV4Auth, error) {
	bad := func(why string) error {
		return v.refuse(identity.CodeProofInvalid, "the signed request's Authorization header %s; sign it with mbot issue --join-method iam", why)
	}
	if len(values) != 1 {
		return nil, bad(fmt.Sprintf("appears %d times, want once", len(values)))
	}
	rest, ok := strings.CutPrefix(values[0], "AWS4-HMAC-SHA256 ")
	if !ok {
		return nil, bad("is not an AWS4-HMAC-SHA256 signature")
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if _, dup := fields[k]; !ok || dup || !slices.Contains([]string{"Credential", "SignedHeaders", "Signature"}, k) {
			return nil, bad("is not Credential=..., SignedHeaders=..., Signature=...")
		}
		fields[k] = val
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[0] == "" || scope[3] != "sts" || scope[4] != "aws4_request" {
		return nil, bad("does not sign for the sts service (Credential=AKID/date/region/sts/aws4_request)")
	}
	sig := fields["Signature"]
	if raw, err := hex.DecodeString(sig); err != nil || len(raw) != sha256.Size {
		return nil, bad("has no 64-hex-digit Signature")
	}
	if fields["SignedHeaders"] == "" {
		return nil, bad("has no SignedHeaders")
	}
	return &sigV4Auth{signedHeaders: strings.Split(fields["SignedHeaders"], ";"), signature: strings.ToLower(sig)}, nil
}

// stsCaller is GetCallerIdentityResult.
type stsCaller struct {
	Arn     string `xml:"GetCallerIdentityResult>Arn"`
	UserID  string `xml:"GetCallerIdentityResult>UserId"`
	Account string `xml:"GetCallerIdentityResult>Account"`
}

// stsError is STS's ErrorResponse.
type stsError struct {
	Code    string `xml:"Error>Code"`
	Message string `xml:"Error>Message"`
}

// headerName is what net/http would send as a header name.
var headerName = lazyregexp.New(`^[A-Za-z0-9-]+$`)

var awsAccount = lazyregexp.New(`^[0-9]{12}$`)

// callSTS sends the checked request to STS and reads who signed it.
func (v *iamVerifier) callSTS(ctx context.Context, req *http.Request) (*stsCaller, error) {
	var (
		resp *http.Response
		body []byte
	)
	start := time.Now()
	err := v.env.outbound().Call(ctx, v.tokenName, "AWS STS", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, stsTimeout)
		defer cancel()
		var err error
		resp, err = v.stsClient().Do(req.WithContext(ctx))
		if err != nil {
			return &identity.Error{Code: identity.CodeIssuerUnavailable, Err: err,
				Message: fmt.Sprintf("join token %q: cannot reach AWS STS at %s (%v); check that the authority can reach it", v.tokenName, req.URL.Host, err)}
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return &identity.Error{Code: identity.CodeIssuerUnavailable, Err: err,
				Message: fmt.Sprintf("join token %q: reading the answer of AWS STS at %s: %v", v.tokenName, req.URL.Host, err)}
		}
		return nil
	})
	if err == nil && resp.StatusCode >= 500 {
		v.env.observe(CallSTS, start, fmt.Errorf("STS answered %s", resp.Status))
	} else {
		v.env.observe(CallSTS, start, err)
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e stsError
		_ = xml.Unmarshal(body, &e)
		if e.Code == "" {
			e.Code, e.Message = resp.Status, truncate(string(bytes.TrimSpace(body)), 200)
		}
		code := identity.CodeProofInvalid
		if resp.StatusCode >= 500 {
			code = identity.CodeIssuerUnavailable // STS's trouble, not the proof's
		}
		return nil, v.refuse(code, "AWS STS at %s refused the signed GetCallerIdentity request: %s: %s", req.URL.Host, e.Code, e.Message)
	}
	var c stsCaller
	if err := xml.Unmarshal(body, &c); err != nil || c.Arn == "" || c.Account == "" {
		return nil, v.refuse(identity.CodeProofInvalid, "AWS STS at %s answered without a caller identity: %s", req.URL.Host, truncate(string(body), 200))
	}
	if !awsAccount.MatchString(c.Account) || !strings.Contains(c.Arn, ":"+c.Account+":") {
		return nil, v.refuse(identity.CodeProofInvalid, "AWS STS at %s answered with account %q and ARN %q, which do not go together", req.URL.Host, c.Account, c.Arn)
	}
	return &c, nil
}

// stsClient follows no redirect: the request goes where it was checked to go.
func (v *iamVerifier) stsClient() *http.Client {
	var transport http.RoundTripper
	if v.env.HTTPClient != nil {
		transport = v.env.HTTPClient.Transport
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       stsTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
