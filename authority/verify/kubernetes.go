package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// KubernetesDefaultIssuer is the service account issuer kubeadm and most
// clusters configure (--service-account-issuer); a static_jwks join token
// trusts it unless issuer: names the cluster's own.
const KubernetesDefaultIssuer = "https://kubernetes.default.svc.cluster.local"

// kubernetesMaxLifetime is the longest lifetime (exp - iat) accepted: a
// projected token's expirationSeconds is 3600 by default, and 600 at least.
// Legacy secret-based tokens never expire and admission-injected ones live
// up to a year.
const kubernetesMaxLifetime = time.Hour

// kubernetesNotPodBound refuses a token that does not die with a pod, for
// every type.
const kubernetesNotPodBound = "the token is not bound to a pod (no kubernetes.io.pod claim): it is a legacy or TokenRequest token; " +
	"mount a projected service account token (a serviceAccountToken volume source with audience and expirationSeconds) and point MBOT_KUBERNETES_TOKEN_PATH at it"

// kubernetesClaims are the claims of a projected service account token, as
// documented in "Managing Service Accounts" (bound service account tokens).
type kubernetesClaims struct {
	Sub        string `json:"sub"`
	Kubernetes *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Pod *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		Node *struct {
			Name string `json:"name"`
		} `json:"node"`
	} `json:"kubernetes.io"`
}

func init() {
	register(kubernetesMethod{&oidcPlatform{
		name:          "kubernetes",
		label:         "Kubernetes service account",
		sectionFields: []string{"type"},
		ruleFields:    []string{"service_account"},
		// No scope on rules: the cluster's own keys (static_jwks, its
		// issuer's, or its API server's TokenReview) admit only its tokens.
		issuer: kubernetesIssuer,
		// The projected token is minted for the authority:
		// serviceAccountToken.audience in the pod's volume.
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims:   kubernetesIdentity,
	}})
}

// kubernetesIssuer checks type against the fields that go with it.
// static_jwks verifies offline against the cluster's keys (kubectl get
// --raw /openid/v1/jwks); oidc discovers them from the cluster's issuer,
// which must be reachable from the authority. in_cluster never gets here:
// kubernetesMethod compiles it (a TokenReview, below).
func kubernetesIssuer(s *oidcSection) (string, error) {
	typ := s.Type
	if typ == "" {
		switch {
		case s.StaticJWKS != "":
			typ = "static_jwks"
		case s.Issuer != "":
			typ = "oidc"
		}
	}
	switch typ {
	case "static_jwks":
		if s.StaticJWKS == "" {
			return "", errors.New("type static_jwks needs static_jwks: the cluster's service account keys, as `kubectl get --raw /openid/v1/jwks` prints them")
		}
		if s.Issuer != "" {
			return s.Issuer, nil
		}
		return KubernetesDefaultIssuer, nil
	case "oidc":
		if s.StaticJWKS != "" {
			return "", errors.New("type oidc fetches the keys from the issuer; remove static_jwks, or set type: static_jwks")
		}
		if s.Issuer == "" {
			return "", errors.New("type oidc needs issuer: the cluster's service account issuer (`kubectl get --raw /.well-known/openid-configuration` shows it), " +
				"whose discovery document the authority can reach")
		}
		return s.Issuer, nil
	case "":
		return "", errors.New("type is required: static_jwks (with static_jwks: the output of `kubectl get --raw /openid/v1/jwks`), " +
			"oidc (with issuer: the cluster's service account issuer) or in_cluster (a TokenReview by the authority's own cluster)")
	}
	return "", fmt.Errorf("type %q is not one of static_jwks, oidc, in_cluster", s.Type)
}

// kubernetesIdentity admits only a short-lived token bound to a pod: the
// kind the kubelet projects into a volume, which dies with the pod.
// service_account is "namespace:name", as in Teleport.
func kubernetesIdentity(tok *oidc.IDToken) (policy.Claims, error) {
	var c kubernetesClaims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	if err := requireJWTClaims("sub", c.Sub); err != nil {
		return nil, err
	}
	rest, ok := strings.CutPrefix(c.Sub, "system:serviceaccount:")
	namespace, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || namespace == "" || name == "" || strings.Contains(name, ":") {
		return nil, fmt.Errorf("the token's subject %q is not a service account (system:serviceaccount:<namespace>:<name>)", c.Sub)
	}
	if c.Kubernetes == nil || c.Kubernetes.Pod == nil || c.Kubernetes.Pod.Name == "" {
		return nil, errors.New(kubernetesNotPodBound)
	}
	if c.Kubernetes.Namespace != namespace || c.Kubernetes.ServiceAccount.Name != name {
		return nil, fmt.Errorf("the token's subject %q disagrees with its kubernetes.io claims (namespace %q, service account %q)",
			c.Sub, c.Kubernetes.Namespace, c.Kubernetes.ServiceAccount.Name)
	}
	if tok.IssuedAt.IsZero() {
		return nil, errors.New("the token has no iat claim, so its lifetime is unknown; use a projected service account token")
	}
	if life := tok.Expiry.Sub(tok.IssuedAt); life > kubernetesMaxLifetime+Leeway {
		return nil, fmt.Errorf("the token lives %s (iat to exp), longer than the %s allowed: it is not a short-lived projected token; "+
			"mount a projected service account token with expirationSeconds: 600 (at most 3600)", life, kubernetesMaxLifetime)
	}
	out := policy.Claims{
		"sub":             {c.Sub},
		"service_account": {namespace + ":" + name},
		"namespace":       {namespace},
		"pod_name":        {c.Kubernetes.Pod.Name},
	}
	if uid := c.Kubernetes.Pod.UID; uid != "" {
		out["pod_uid"] = []string{uid}
	}
	if c.Kubernetes.Node != nil && c.Kubernetes.Node.Name != "" {
		out["node_name"] = []string{c.Kubernetes.Node.Name}
	}
	return out, nil
}

// The in-cluster defaults: where the kubelet mounts the authority pod's own
// service account token and the cluster's CA.
const (
	kubernetesInClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	kubernetesInClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// kubernetesInClusterFields are the section fields only type in_cluster takes.
var kubernetesInClusterFields = []string{"api_server", "ca_file", "token_file"}

// kubernetesMethod is the kubernetes join method: types static_jwks and
// oidc verify the token as an OIDC token (oidcPlatform); type in_cluster
// asks the cluster's API server with a TokenReview.
type kubernetesMethod struct{ *oidcPlatform }

func (m kubernetesMethod) Compile(tokenName string, section *yaml.Node, env *Env) (Verifier, error) {
	if section == nil || section.Kind != yaml.MappingNode {
		return m.oidcPlatform.Compile(tokenName, section, env)
	}
	if typ := resources.Lookup(section, "type"); typ == nil || typ.Value != "in_cluster" {
		for _, f := range kubernetesInClusterFields {
			if n := resources.Lookup(section, f); n != nil {
				return nil, fmt.Errorf("line %d: spec.kubernetes.%s goes with type: in_cluster only", n.Line, f)
			}
		}
		return m.oidcPlatform.Compile(tokenName, section, env)
	}
	return compileKubernetesInCluster(tokenName, section, env)
}

// kubernetesInClusterSection is spec.kubernetes with type: in_cluster.
type kubernetesInClusterSection struct {
	Type string `yaml:"type"`
	// APIServer is https://host[:port] of the API server; default
	// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	APIServer string `yaml:"api_server"`
	// CAFile is the PEM bundle the API server's certificate must chain to.
	CAFile string `yaml:"ca_file"`
	// TokenFile is the authority's own token, sent as the TokenReview's
	// bearer; read on every review, as the kubelet rotates it.
	TokenFile string    `yaml:"token_file"`
	Allow     yaml.Node `yaml:"allow"`
}

func compileKubernetesInCluster(tokenName string, section *yaml.Node, env *Env) (Verifier, error) {
	for _, f := range []string{"issuer", "static_jwks"} {
		if n := resources.Lookup(section, f); n != nil {
			return nil, fmt.Errorf("line %d: spec.kubernetes.%s: type in_cluster asks the authority's own API server, which knows its keys and issuer; "+
				"remove %s, or set type: static_jwks or oidc", n.Line, f, f)
		}
	}
	if err := checkKeys(section, "spec.kubernetes", append([]string{"type", "allow"}, kubernetesInClusterFields...)); err != nil {
		return nil, err
	}
	var s kubernetesInClusterSection
	if err := section.Decode(&s); err != nil {
		return nil, err
	}
	apiServer := s.APIServer
	if apiServer == "" {
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" {
			return nil, fmt.Errorf("line %d: spec.kubernetes: type in_cluster needs the authority to run in the cluster (KUBERNETES_SERVICE_HOST is unset); "+
				"set api_server: https://<host>:<port> (with ca_file: and token_file:) to reach the API server from outside", section.Line)
		}
		if port == "" {
			port = "443"
		}
		apiServer = "https://" + net.JoinHostPort(host, port)
	}
	if u, err := url.Parse(apiServer); err != nil || u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return nil, fmt.Errorf("line %d: spec.kubernetes.api_server %q is not an https://host[:port] URL", section.Line, apiServer)
	}
	rules, err := policy.ParseAllowRules(&s.Allow, []string{"service_account"})
	if s.Allow.Kind == 0 {
		rules, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("line %d: spec.kubernetes.allow: a join token needs at least one allow rule (fields: service_account)", section.Line)
	}
	v := &kubernetesInClusterVerifier{
		tokenName: tokenName, apiServer: strings.TrimRight(apiServer, "/"),
		caFile: s.CAFile, tokenFile: s.TokenFile, audience: env.Audience, env: env, rules: rules,
	}
	if v.caFile == "" {
		v.caFile = kubernetesInClusterCAFile
	}
	if v.tokenFile == "" {
		v.tokenFile = kubernetesInClusterTokenFile
	}
	return v, nil
}

// kubernetesInClusterVerifier admits a service account token that the
// cluster's API server authenticates (TokenReview) for the authority's
// audience. The authority's service account needs create on tokenreviews,
// as the system:auth-delegator ClusterRole grants.
type kubernetesInClusterVerifier struct {
	tokenName, apiServer, caFile, tokenFile, audience string
	env                                               *Env
	rules                                             []policy.AllowRule

	mu     sync.Mutex
	ca     []byte       // the CA bundle client trusts
	client *http.Client // rebuilt when ca_file changes
}

func (v *kubernetesInClusterVerifier) Rules() []policy.AllowRule { return v.rules }

// tokenReview is the authentication.k8s.io/v1 TokenReview, request and answer.
type tokenReview struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Token     string   `json:"token"`
		Audiences []string `json:"audiences"`
	} `json:"spec"`
	Status tokenReviewStatus `json:"status"`
}

type tokenReviewStatus struct {
	Authenticated bool `json:"authenticated"`
	User          struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	Audiences []string `json:"audiences"`
	Error     string   `json:"error"`
}

// The user extra keys the service account authenticator sets for a token
// bound to a pod.
const (
	kubernetesExtraPodName  = "authentication.kubernetes.io/pod-name"
	kubernetesExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	kubernetesExtraNodeName = "authentication.kubernetes.io/node-name"
)

func (v *kubernetesInClusterVerifier) Verify(ctx context.Context, proof string) (*Admission, error) {
	payload, err := jwtPayload(proof)
	if err != nil {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the proof is not a Kubernetes service account token (%v)", v.tokenName, err)
	}
	st, err := v.review(ctx, proof)
	if err != nil {
		return nil, err
	}
	return v.admit(payload, st)
}

// admit judges the API server's review st of a token whose payload is
// payload: the part of Verify after the network, fuzzed on its own.
func (v *kubernetesInClusterVerifier) admit(payload []byte, st *tokenReviewStatus) (*Admission, error) {
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "no reason given"
		}
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the cluster's API server did not authenticate the token (%s); "+
			"present a fresh projected service account token with audience %q", v.tokenName, reason, v.audience)
	}
	if !slices.Contains(st.Audiences, v.audience) {
		return nil, identity.Errorf(identity.CodeWrongAudience, "join token %q expects audience %q, but the API server authenticated the token for %q; request the token with audience %q",
			v.tokenName, v.audience, strings.Join(st.Audiences, ","), v.audience)
	}
	user := st.User.Username
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	namespace, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || namespace == "" || name == "" || strings.Contains(name, ":") {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the token's user %q is not a service account (system:serviceaccount:<namespace>:<name>)", v.tokenName, user)
	}
	pod := firstExtra(st.User.Extra, kubernetesExtraPodName)
	if pod == "" {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: %s", v.tokenName, kubernetesNotPodBound)
	}
	// The API server has verified the signature over this very payload, so
	// its claims are now the cluster's word: they bound the replay window.
	var c struct {
		Issuer   string       `json:"iss"`
		Sub      string       `json:"sub"`
		JTI      string       `json:"jti"`
		Expiry   *json.Number `json:"exp"`
		IssuedAt *json.Number `json:"iat"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: unreadable claims: %v", v.tokenName, err)
	}
	if c.Sub != user {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the token's subject %q is not the user %q the API server authenticated", v.tokenName, c.Sub, user)
	}
	exp, iat := unixClaim(c.Expiry), unixClaim(c.IssuedAt)
	if exp.IsZero() {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the token has no exp claim; only expiring tokens are accepted", v.tokenName)
	}
	if iat.IsZero() {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the token has no iat claim, so its lifetime is unknown; use a projected service account token", v.tokenName)
	}
	if life := exp.Sub(iat); life > kubernetesMaxLifetime+Leeway {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the token lives %s (iat to exp), longer than the %s allowed: it is not a short-lived projected token; "+
			"mount a projected service account token with expirationSeconds: 600 (at most 3600)", v.tokenName, life, kubernetesMaxLifetime)
	}
	now := v.env.now()
	if now.After(exp.Add(Leeway)) {
		return nil, identity.Errorf(identity.CodeProofExpired, "join token %q: the token expired at %s (%s ago); read the projected token afresh",
			v.tokenName, exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second))
	}
	if now.Add(Leeway).Before(iat) {
		return nil, identity.Errorf(identity.CodeProofNotYetValid, "join token %q: the token claims to be issued at %s, in the future; check the clocks of the authority and the cluster",
			v.tokenName, iat.UTC().Format(time.RFC3339))
	}
	claims := policy.Claims{
		"sub":             {user},
		"service_account": {namespace + ":" + name},
		"namespace":       {namespace},
		"pod_name":        {pod},
	}
	if uid := firstExtra(st.User.Extra, kubernetesExtraPodUID); uid != "" {
		claims["pod_uid"] = []string{uid}
	}
	if node := firstExtra(st.User.Extra, kubernetesExtraNodeName); node != "" {
		claims["node_name"] = []string{node}
	}
	// The replay id is that of the oidc and static_jwks types for the same
	// token (issuer and jti, else the signed claims), so one token joins
	// once whichever way a cluster is trusted; keyed on the claims, not the
	// text, which has other encodings that verify too.
	id := c.JTI
	if id == "" {
		id = string(payload)
	}
	sum := sha256.Sum256([]byte(c.Issuer + "\x00" + id))
	// The lifetime is at most an hour and the leeway, so the replay record
	// is kept no longer than that.
	return &Admission{Claims: claims, ProofID: hex.EncodeToString(sum[:]), UsableUntil: exp.Add(Leeway)}, nil
}

// review asks the API server about token. Errors are issuer_unavailable:
// the token was not judged.
func (v *kubernetesInClusterVerifier) review(ctx context.Context, token string) (*tokenReviewStatus, error) {
	unavailable := func(err error, format string, args ...any) error {
		return &identity.Error{Code: identity.CodeIssuerUnavailable, Err: err,
			Message: fmt.Sprintf("join token %q: cannot ask the cluster's API server %s to review the token: ", v.tokenName, v.apiServer) + fmt.Sprintf(format, args...)}
	}
	client, err := v.httpClient()
	if err != nil {
		return nil, unavailable(err, "%v; set spec.kubernetes.ca_file to the cluster's CA bundle", err)
	}
	bearer, err := os.ReadFile(v.tokenFile)
	if err != nil {
		return nil, unavailable(err, "the authority's own token: %v; set spec.kubernetes.token_file", err)
	}
	var req tokenReview
	req.APIVersion, req.Kind = "authentication.k8s.io/v1", "TokenReview"
	req.Spec.Token, req.Spec.Audiences = token, []string{v.audience}
	body, err := json.Marshal(&req)
	if err != nil {
		return nil, unavailable(err, "%v", err)
	}
	var (
		resp *http.Response
		text []byte
	)
	start := time.Now()
	err = v.env.outbound().Call(ctx, v.tokenName, "the cluster's API server", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, v.apiServer+"/apis/authentication.k8s.io/v1/tokenreviews", bytes.NewReader(body))
		if err != nil {
			return unavailable(err, "%v", err)
		}
		hreq.Header.Set("Content-Type", "application/json")
		hreq.Header.Set("Accept", "application/json")
		hreq.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(bearer)))
		resp, err = client.Do(hreq)
		if err != nil {
			return unavailable(err, "%v", err)
		}
		defer resp.Body.Close()
		if text, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
			return unavailable(err, "reading the answer: %v", err)
		}
		return nil
	})
	if err == nil && resp.StatusCode/100 != 2 {
		v.env.observe(CallTokenReview, start, fmt.Errorf("the API server answered %s", resp.Status))
	} else {
		v.env.observe(CallTokenReview, start, err)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, unavailable(nil, "the API server does not accept the authority's own token (%s, from %s)", resp.Status, v.tokenFile)
	case resp.StatusCode == http.StatusForbidden:
		return nil, unavailable(nil, "the authority's service account may not create tokenreviews (%s); bind it to the system:auth-delegator ClusterRole", resp.Status)
	case resp.StatusCode/100 != 2:
		return nil, unavailable(nil, "%s: %s", resp.Status, strings.TrimSpace(string(text[:min(len(text), 200)])))
	}
	var ans tokenReview
	if err := json.Unmarshal(text, &ans); err != nil {
		return nil, unavailable(err, "the answer is not a TokenReview: %v", err)
	}
	return &ans.Status, nil
}

// httpClient trusts ca_file, read on every review; the client (and its
// connections) is kept while the file is unchanged.
func (v *kubernetesInClusterVerifier) httpClient() (*http.Client, error) {
	ca, err := os.ReadFile(v.caFile)
	if err != nil {
		return nil, fmt.Errorf("the cluster's CA: %v", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.client != nil && bytes.Equal(ca, v.ca) {
		return v.client, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("the cluster's CA %s holds no PEM certificate", v.caFile)
	}
	var t *http.Transport
	if v.env.HTTPClient != nil {
		if base, ok := v.env.HTTPClient.Transport.(*http.Transport); ok {
			t = base.Clone()
		}
	}
	if t == nil {
		t = http.DefaultTransport.(*http.Transport).Clone()
	}
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if v.client != nil {
		v.client.CloseIdleConnections()
	}
	v.ca, v.client = ca, &http.Client{Transport: t}
	return v.client, nil
}

// jwtPayload decodes the payload of a JWT without checking anything.
func jwtPayload(token string) ([]byte, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("a JWT has three dot-separated parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("the payload is not base64url")
	}
	if !json.Valid(payload) {
		return nil, errors.New("the payload is not JSON")
	}
	return payload, nil
}

func unixClaim(n *json.Number) time.Time {
	if n == nil {
		return time.Time{}
	}
	f, err := n.Float64()
	if err != nil || f <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(f), 0)
}

func firstExtra(extra map[string][]string, key string) string {
	if vs := extra[key]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
