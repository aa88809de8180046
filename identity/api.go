// Package identity holds what the mbot client and authority share: the wire
// types of the HTTP API, key generation, and the identity files written for
// OpenSSH, TLS clients and scripts.
package identity

import (
	"crypto/tls"
	"fmt"
	"time"
)

// API paths served by the authority.
const (
	PathPing = "/v1/ping"
	PathJoin = "/v1/join"
	// PathJoinChallenge hands out the challenge a bound_keypair join signs.
	PathJoinChallenge = "/v1/join/challenge"
)

// TLSCurves are the key exchanges of the authority's API: P-256 only, which
// every TLS client must implement. The post-quantum hybrid (X25519MLKEM768)
// is left out on purpose: it protects recorded traffic from future
// decryption, and nothing on this connection outlives the join (the proof is
// single-use and expires in minutes, certificates and CA bundles are public,
// private keys never travel), while it doubles the cost of every handshake.
// X25519 is left out because Go ignores preference order and would pick it,
// and with Go's assembly P-256 is the cheaper of the two.
var TLSCurves = []tls.CurveID{tls.CurveP256}

// MaxBotTTL is the longest lifetime a bot certificate may have, whatever is asked.
const MaxBotTTL = 24 * time.Hour

// PingResponse tells a joiner which cluster it reached and which audience to
// request its OIDC token for.
type PingResponse struct {
	ClusterName string   `json:"cluster_name"`
	Audience    string   `json:"audience"`
	Version     string   `json:"version"`
	Methods     []string `json:"methods"`
}

// JoinRequest carries one proof of identity and the public keys of every
// output that should be certified by it.
type JoinRequest struct {
	JoinToken  string          `json:"join_token"`
	Method     string          `json:"method"`
	Proof      string          `json:"proof"`
	TTLSeconds int64           `json:"ttl_seconds,omitempty"`
	Outputs    []OutputRequest `json:"outputs"`
	// CIPlatform names the CI platform a job runs on when it joins with a
	// cloud's method (CIPlatforms); the client reports it, for the audit
	// record only.
	CIPlatform string `json:"ci_platform,omitempty"`
}

// CIPlatforms are the CI platforms whose jobs join with a cloud's method,
// by name, with the method they join with.
var CIPlatforms = map[string]string{"cloud_build": "gcp", "codebuild": "iam"}

// Output types (SPEC §7). The empty type is OutputIdentity, so that a
// request or response of a client or authority that predates output types
// means what it always meant.
const (
	OutputIdentity    = "identity"
	OutputDatabase    = "database"
	OutputKubernetes  = "kubernetes"
	OutputApplication = "application"
	OutputJWT         = "workload-identity-jwt"
	OutputSSHHost     = "ssh_host"
	// OutputDatabaseServer is a database server's own certificate, the
	// database-client CA it checks clients by and that CA's CRL.
	OutputDatabaseServer = "database_server"
)

// OutputRequest asks for certificates on one output's keys. Which keys it
// carries depends on its type: identity both, database, kubernetes and
// application the TLS key only, ssh_host the SSH key only,
// workload-identity-jwt none.
type OutputRequest struct {
	Name string `json:"name"`
	// Type is the output type; empty means OutputIdentity.
	Type string `json:"type,omitempty"`
	// Roles restricts the output to a subset of the bot's roles; empty means all.
	Roles []string `json:"roles,omitempty"`
	// SSHPublicKey is in authorized_keys format.
	SSHPublicKey string `json:"ssh_public_key,omitempty"`
	// TLSPublicKey is a PEM "PUBLIC KEY" block (PKIX).
	TLSPublicKey string `json:"tls_public_key,omitempty"`

	// What the output asks for, one field per type; only its own type's is set.
	Database    *DatabaseRequest    `json:"database,omitempty"`
	Kubernetes  *KubernetesRequest  `json:"kubernetes,omitempty"`
	Application *ApplicationRequest `json:"application,omitempty"`
	JWT         *JWTRequest         `json:"jwt,omitempty"`
	SSHHost     *SSHHostRequest     `json:"ssh_host,omitempty"`
	// DatabaseServer asks for a database server's certificate.
	DatabaseServer *DatabaseServerRequest `json:"database_server,omitempty"`
}

// OutputType is the request's type, OutputIdentity when unset.
func (o *OutputRequest) OutputType() string {
	if o.Type == "" {
		return OutputIdentity
	}
	return o.Type
}

// DatabaseRequest asks for a database client certificate.
type DatabaseRequest struct {
	// Database names a kind: database resource.
	Database string `json:"database"`
	// Username is the database user: the certificate's CN.
	Username string `json:"username"`
	// DBName is the database to connect to; optional.
	DBName string `json:"db_name,omitempty"`
}

// KubernetesRequest asks for a Kubernetes client certificate.
type KubernetesRequest struct {
	// Cluster names a kind: kubernetes_cluster resource.
	Cluster string `json:"kubernetes_cluster"`
	// User is the Kubernetes user (the certificate's CN), one of the
	// output's kubernetes_users; empty when the roles grant exactly one.
	User string `json:"user,omitempty"`
	// Groups are the Kubernetes groups (the certificate's O), some of the
	// output's kubernetes_groups; empty means every one granted.
	Groups []string `json:"groups,omitempty"`
}

// MaxKubernetesGroups bounds the groups one kubernetes output asks for.
const MaxKubernetesGroups = 64

// ApplicationRequest asks for an X.509-SVID.
type ApplicationRequest struct {
	// SPIFFEID is a path (/ci/team/app) in the cluster's trust domain or a
	// whole spiffe:// ID of it; empty means spiffe://<cluster>/bot/<bot>.
	SPIFFEID string   `json:"spiffe_id,omitempty"`
	DNSSANs  []string `json:"dns_sans,omitempty"`
}

// JWTRequest asks for one JWT-SVID per audience.
type JWTRequest struct {
	Audiences []string `json:"audiences"`
	// SPIFFEID is the subject, as in ApplicationRequest; empty: the bot's default.
	SPIFFEID string `json:"spiffe_id,omitempty"`
}

// SSHHostRequest asks for an SSH host certificate.
type SSHHostRequest struct {
	HostNames []string `json:"host_names"`
}

// DatabaseServerRequest asks for a database server's certificate for
// the names clients dial: DNS names and IP addresses.
type DatabaseServerRequest struct {
	ServerNames []string `json:"server_names"`
}

// JoinResponse carries every certificate of one join and the CA material
// needed to trust the authority's servers.
type JoinResponse struct {
	ClusterName string           `json:"cluster_name"`
	Bot         string           `json:"bot"`
	JoinToken   string           `json:"join_token"`
	Method      string           `json:"method"`
	Outputs     []OutputResponse `json:"outputs"`
	// TLSCA is the PEM bundle of the authority's TLS CA.
	TLSCA string `json:"tls_ca"`
	// SSHHostCA is the SSH host CA public key in authorized_keys format.
	SSHHostCA    string   `json:"ssh_host_ca"`
	HostPatterns []string `json:"host_patterns"`
	// TTLCapped is set when the requested TTL was above a cap and was lowered.
	TTLCapped bool     `json:"ttl_capped,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// OutputResponse is what one output was granted. The identity output's
// fields are the ones an authority without output types sent; an output of
// another type sets its certificate fields (SSHCertificate for ssh_host,
// TLSCertificate for the X.509 ones) and its own typed result.
type OutputResponse struct {
	Name           string    `json:"name"`
	Type           string    `json:"type,omitempty"`
	Roles          []string  `json:"roles"`
	Logins         []string  `json:"logins"`
	SSHCertificate string    `json:"ssh_certificate"`
	TLSCertificate string    `json:"tls_certificate"`
	SSHSerial      uint64    `json:"ssh_serial"`
	TLSSerial      string    `json:"tls_serial"`
	NotBefore      time.Time `json:"not_before"`
	NotAfter       time.Time `json:"not_after"`

	// One typed result per output type.
	Database    *DatabaseGrant    `json:"database,omitempty"`
	Kubernetes  *KubernetesGrant  `json:"kubernetes,omitempty"`
	SSHHost     *SSHHostGrant     `json:"ssh_host,omitempty"`
	Application *ApplicationGrant `json:"application,omitempty"`
	JWT         *JWTGrant         `json:"jwt,omitempty"`
	// DatabaseServer is a database_server output's grant.
	DatabaseServer *DatabaseServerGrant `json:"database_server,omitempty"`
}

// ApplicationGrant is what an application output holds beside its
// X.509-SVID (TLSCertificate): the SPIFFE ID, DNS SANs and trust bundle.
type ApplicationGrant struct {
	SPIFFEID string   `json:"spiffe_id"`
	DNSSANs  []string `json:"dns_sans,omitempty"`
	// Bundle is the PEM bundle of the SPIFFE CA: what peers trust SVIDs by.
	Bundle string `json:"bundle"`
}

// JWTGrant is a workload-identity-jwt output: one JWT-SVID per audience,
// in the order asked, issued by Issuer.
type JWTGrant struct {
	SPIFFEID string    `json:"spiffe_id"`
	Issuer   string    `json:"issuer"`
	SVIDs    []JWTSVID `json:"svids"`
}

// JWTSVID is one signed JWT-SVID (compact JWS) for one audience.
type JWTSVID struct {
	Audience string `json:"audience"`
	Token    string `json:"token"`
}

// MaxJWTSVIDTTL caps a JWT-SVID's lifetime whatever the output's TTL: it
// is a bearer token, meant to be exchanged at once (AWS STS, Vault login),
// and cannot be revoked.
const MaxJWTSVIDTTL = time.Hour

// MaxJWTAudiences bounds the audiences of one workload-identity-jwt output.
const MaxJWTAudiences = 16

// PathOIDCDiscovery, PathJWKS and PathSPIFFEBundle are served by the
// authority without authentication: the issuer's discovery document, the
// JWT-SVID signing key and the SPIFFE trust bundle.
const (
	PathOIDCDiscovery = "/.well-known/openid-configuration"
	PathJWKS          = "/.well-known/jwks.json"
	PathSPIFFEBundle  = "/.well-known/spiffe-bundle"
)

// DatabaseGrant is what a database output needs to connect: the server and
// the CA its certificate is checked against.
type DatabaseGrant struct {
	// Database is the kind: database resource's name.
	Database string `json:"database"`
	Protocol string `json:"protocol"` // postgres or mysql
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Username string `json:"username"`
	DBName   string `json:"db_name,omitempty"`
	// ServerCA is the PEM bundle of the CA that signed the server's certificate.
	ServerCA string `json:"server_ca"`
}

// SSHHostGrant is what an ssh_host output needs besides its host
// certificate (OutputResponse.SSHCertificate): the names it is valid for
// and the SSH user CA that sshd's TrustedUserCAKeys names.
type SSHHostGrant struct {
	// HostNames are the certificate's principals, lower-case, no wildcard.
	HostNames []string `json:"host_names"`
	// UserCA is the SSH user CA public key in authorized_keys format.
	UserCA string `json:"user_ca"`
	// RevokedKeys is the OpenSSH KRL of the user CA's locked certificates
	// (GET /v1/revocations/ssh-krl), for sshd's RevokedKeys.
	RevokedKeys []byte `json:"revoked_keys,omitempty"`
}

// DatabaseServerGrant is what a database_server output needs besides its
// server certificate (OutputResponse.TLSCertificate): the names it is
// valid for, the CA clients' certificates are checked by and its CRL.
type DatabaseServerGrant struct {
	// ServerNames are the certificate's DNS names (lower-case) and IP
	// addresses, in the order asked.
	ServerNames []string `json:"server_names"`
	// ClientCA is the PEM bundle of the database-client CA: both CAs while
	// it is rotated.
	ClientCA string `json:"client_ca"`
	// CRL is the database-client CA's CRL in PEM (GET /crl/database-client),
	// one per CA of ClientCA.
	CRL string `json:"crl"`
}

// KubernetesGrant is what a kubernetes output needs to reach its API
// server: the server and the CA its certificate is checked against, and
// who the client certificate (TLSCertificate) authenticates as.
type KubernetesGrant struct {
	// Cluster is the kind: kubernetes_cluster resource's name.
	Cluster string `json:"kubernetes_cluster"`
	// APIServer is the API server's https:// URL.
	APIServer string `json:"api_server"`
	// CA is the PEM bundle of the CA that signed the API server's certificate.
	CA string `json:"ca"`
	// User is the certificate's CN, Groups its O (one value per group).
	User   string   `json:"user"`
	Groups []string `json:"groups"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

// ErrorCode is a stable, machine-readable reason for a refusal.
type ErrorCode string

// The error codes the API returns. They are part of the contract: scripts
// may match on them, so they never change meaning.
const (
	CodeBadRequest        ErrorCode = "bad_request"
	CodeUnknownJoinToken  ErrorCode = "unknown_join_token"
	CodeMethodMismatch    ErrorCode = "join_method_mismatch"
	CodeProofInvalid      ErrorCode = "proof_invalid"
	CodeProofExpired      ErrorCode = "proof_expired"
	CodeProofNotYetValid  ErrorCode = "proof_not_yet_valid"
	CodeWrongIssuer       ErrorCode = "wrong_issuer"
	CodeWrongAudience     ErrorCode = "wrong_audience"
	CodeClaimMissing      ErrorCode = "claim_missing"
	CodeRuleMismatch      ErrorCode = "rule_mismatch"
	CodeProofReplayed     ErrorCode = "proof_replayed"
	CodeRoleDenied        ErrorCode = "role_denied"
	CodeIssuerUnavailable ErrorCode = "issuer_unavailable"
	CodeAdminRequired     ErrorCode = "admin_required"
	CodeInternal          ErrorCode = "internal"
	// CodeIdentityRequired: a renewal came without a bot certificate of this cluster.
	CodeIdentityRequired ErrorCode = "identity_required"
	// CodeRenewalRefused: the certificate cannot be renewed (its join token or
	// bot is gone, or it came from a join that does not renew itself).
	CodeRenewalRefused ErrorCode = "renewal_refused"
	// CodeBotLocked: the whole bot is locked, by an authority from before
	// instance-scoped locks (CodeInstanceLocked) that saw a copied identity.
	CodeBotLocked ErrorCode = "bot_locked"
	// CodeInstanceLocked: a stale certificate generation of this bot
	// instance (renewal chain) was presented, so a copy of its identity is
	// in use elsewhere; the instance is locked, the bot's others are not.
	CodeInstanceLocked ErrorCode = "instance_locked"
	// CodeUnsupportedKey: an output's public key is of a type or size the
	// authority does not certify (RSA below 2048 bits, an unknown curve).
	CodeUnsupportedKey ErrorCode = "unsupported_key"
	// CodeAdminLocked: the admin API request came with an identity of an
	// admin that is locked (mbot lock --admin).
	CodeAdminLocked ErrorCode = "admin_locked"
	// CodeAdminReadOnly: a read-only admin identity (mbot sign --admin
	// --read-only) asked the admin API to change something.
	CodeAdminReadOnly ErrorCode = "admin_read_only"
	// CodeRateLimited: too many refused requests came from the caller's
	// address; the answer carries Retry-After.
	CodeRateLimited ErrorCode = "rate_limited"
	// CodeKeypairMismatch: a bound_keypair join was not signed by the key
	// its join token is bound to (or a rotation not by the current key).
	CodeKeypairMismatch ErrorCode = "keypair_mismatch"
	// CodeJoinTokenLocked: a bound_keypair join presented an older sequence
	// than the last join's, so two holders of the key are joining; the
	// join token refuses every join until an admin rotates or unlocks it.
	CodeJoinTokenLocked ErrorCode = "join_token_locked"
	// CodeRoleLocked: the join, renewal or exchange would grant a role an
	// admin locked (mbot lock role/NAME).
	CodeRoleLocked ErrorCode = "role_locked"
	// CodeClaimLocked: the join's proof carries an identifying claim an
	// admin locked (mbot lock --claim NAME=VALUE).
	CodeClaimLocked ErrorCode = "claim_locked"
	// CodeCertLocked: the renewal or exchange presented a certificate an
	// admin locked by its serial (mbot lock cert/SERIAL).
	CodeCertLocked ErrorCode = "cert_locked"

	// Trusted clusters (SPEC §8).
	// CodeExchangeInvalid: an exchange whose root certificate, signature
	// or target cluster does not verify.
	CodeExchangeInvalid ErrorCode = "exchange_invalid"
	// CodeExchangeExpired: an exchange made too long ago (or ahead).
	CodeExchangeExpired ErrorCode = "exchange_expired"
	// CodeRootIdentityExpired: the root identity presented has expired.
	CodeRootIdentityExpired ErrorCode = "root_identity_expired"
	// CodeUnknownRoot: no trusted_cluster of the leaf trusts the root
	// that issued the identity.
	CodeUnknownRoot ErrorCode = "unknown_root"
	// CodeTrustDisabled: the trusted_cluster is there with enabled: false.
	CodeTrustDisabled ErrorCode = "trust_disabled"
	// CodeRootNameCollision: the roots of two trusted_clusters report the
	// same cluster_name and neither pins it (spec.root.cluster_name).
	CodeRootNameCollision ErrorCode = "root_name_collision"
	// CodeLeafAnswerUnverified: (root relay) the leaf's answer holds a CA
	// the root does not know for that leaf; it is not passed on.
	CodeLeafAnswerUnverified ErrorCode = "leaf_answer_unverified"
	// CodeRoleUnmapped: no root role of the identity maps to a leaf role.
	CodeRoleUnmapped ErrorCode = "role_unmapped"
	// CodeRootUnavailable: the leaf cannot vouch for what the root says
	// now (its CA bundle or lock list is stale): retry later.
	CodeRootUnavailable ErrorCode = "root_unavailable"
	// CodeLeafUnreachable: the root relays to a leaf whose tunnel is not attached.
	CodeLeafUnreachable ErrorCode = "leaf_unreachable"
	// CodeLeafBusy: the leaf's tunnel carries as many relayed requests as
	// the root sends it at once, and more are waiting; retry after
	// Retry-After.
	CodeLeafBusy ErrorCode = "leaf_busy"
	// CodeUnknownLeaf: the root has no leaf_cluster of that name.
	CodeUnknownLeaf ErrorCode = "unknown_leaf"
	// CodeStoreUnavailable: the authority cannot reach its database
	// (PostgreSQL down or restarting); nothing was issued or recorded, and
	// the answer carries Retry-After.
	CodeStoreUnavailable ErrorCode = "store_unavailable"
)

// HTTPStatus is the status code the authority answers a code with.
func (c ErrorCode) HTTPStatus() int {
	switch c {
	case CodeBadRequest, CodeUnsupportedKey:
		return 400
	case CodeRateLimited:
		return 429
	case CodeAdminRequired, CodeIdentityRequired:
		return 401
	case CodeIssuerUnavailable, CodeRootUnavailable, CodeStoreUnavailable, CodeLeafBusy:
		return 503
	case CodeLeafUnreachable, CodeLeafAnswerUnverified:
		return 502
	case CodeInternal:
		return 500
	default:
		return 403
	}
}

// Error is a refusal with a stable code and a message a person can act on.
type Error struct {
	Code    ErrorCode
	Message string
	Err     error // the underlying cause, kept for logs; never sent
	// RetryAfter, when set, is sent as the Retry-After header: the request
	// was not looked at (rate_limited) or could not be served yet
	// (issuer_unavailable), and may be sent again, proof and all, after it.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted message.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
