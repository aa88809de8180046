package verify

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
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
	register(&oidcPlatform{
		name:          "kubernetes",
		label:         "Kubernetes service account",
		sectionFields: []string{"type"},
		ruleFields:    []string{"service_account"},
		issuer:        kubernetesIssuer,
		// The projected token is minted for the authority:
		// serviceAccountToken.audience in the pod's volume.
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims:   kubernetesIdentity,
	})
}

// kubernetesIssuer checks type against the fields that go with it.
// static_jwks verifies offline against the cluster's keys (kubectl get
// --raw /openid/v1/jwks); oidc discovers them from the cluster's issuer,
// which must be reachable from the authority.
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
		if u, err := url.Parse(s.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return "", fmt.Errorf("issuer %q is not an https:// URL", s.Issuer)
		}
		return s.Issuer, nil
	case "in_cluster":
		return "", errors.New("type in_cluster (a TokenReview by the authority's own cluster) is not supported yet; " +
			"use type: static_jwks with the cluster's keys, or type: oidc with its issuer")
	case "":
		return "", errors.New("type is required: static_jwks (with static_jwks: the output of `kubectl get --raw /openid/v1/jwks`) " +
			"or oidc (with issuer: the cluster's service account issuer)")
	}
	return "", fmt.Errorf("type %q is not one of static_jwks, oidc", s.Type)
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
		return nil, errors.New("the token is not bound to a pod (no kubernetes.io.pod claim): it is a legacy or TokenRequest token; " +
			"mount a projected service account token (a serviceAccountToken volume source with audience and expirationSeconds) and point MBOT_KUBERNETES_TOKEN_PATH at it")
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
