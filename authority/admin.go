package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// Export types for mbot authority export.
var ExportTypes = []string{"ca-pin", "tls-ca", "ssh-user-ca", "ssh-host-ca",
	"database-client-ca", "database-server-ca", "kubernetes-client-ca", "spiffe-ca", "jwt-jwks", "spiffe-bundle"}

// OpenAdmin opens the store and CAs of an authority without serving or
// re-applying its resources: what local admin commands on the authority
// host need (like tctl). The CAs are created if this is the first use.
func OpenAdmin(ctx context.Context, cfg *Config) (store.Store, *CAs, error) {
	kek, err := LoadKEK(cfg)
	if err != nil {
		return nil, nil, err
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	cas, err := LoadCAs(ctx, st, cfg.ClusterName, kek)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, cas, nil
}

// Export renders one piece of public CA material.
func (c *CAs) Export(typ string) (string, error) {
	switch typ {
	case "ca-pin":
		return c.Pin() + "\n", nil
	case "tls-ca":
		return string(c.TLSCertPEM), nil
	case "ssh-user-ca":
		return c.SSHUserCAKeys(), nil
	case "ssh-host-ca":
		return c.SSHHostCAKeys(), nil
	case "database-client-ca":
		return string(c.DatabaseClient.CertPEM), nil
	case "database-server-ca":
		return string(c.DatabaseServer.CertPEM), nil
	case "kubernetes-client-ca":
		return string(c.KubernetesClient.CertPEM), nil
	case "spiffe-ca":
		return string(c.SPIFFE.CertPEM), nil
	case "spiffe-bundle":
		b, err := c.SPIFFEBundle(c.clusterName)
		return string(b) + "\n", err
	case "jwt-jwks":
		out, err := json.MarshalIndent(map[string]any{"keys": c.JWKs()}, "", "  ")
		return string(out) + "\n", err
	}
	return "", fmt.Errorf("--type %q is not one of %s", typ, strings.Join(ExportTypes, ", "))
}

// SignHost issues an SSH host key and certificate and a TLS server key and
// certificate for names, and records the signing in the audit log.
func SignHost(ctx context.Context, st store.Store, cas *CAs, names []string, ttl time.Duration) ([]identity.File, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("--host needs at least one host name")
	}
	for _, n := range names {
		if err := CheckHostName("--host", n); err != nil {
			return nil, err
		}
	}
	keys, err := identity.NewKeys()
	if err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(keys.SSH.Public())
	if err != nil {
		return nil, err
	}
	notAfter := time.Now().Add(ttl).Truncate(time.Second)
	serial := RandomSSHSerial()
	hostCert, err := cas.SignSSHHost(SSHCertRequest{Key: sshPub, KeyID: "host=" + strings.Join(names, ","), Principals: names,
		NotAfter: notAfter, Serial: serial})
	if err != nil {
		return nil, err
	}
	tlsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tlsCert, err := cas.SignTLSServer(tlsKey.Public(), withLocalNames(names), notAfter)
	if err != nil {
		return nil, err
	}
	keys.TLS = tlsKey
	sshKeyPEM, err := keys.SSHPrivateKeyPEM(names[0])
	if err != nil {
		return nil, err
	}
	tlsKeyPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	ev := &store.AuditEvent{Event: "sign.host", Allowed: true, Message: "host certificate for " + strings.Join(names, ","),
		Serials: []string{fmt.Sprintf("ssh:%d", serial), "tls:" + serialString(tlsCert.Serial)}, NotAfter: notAfter,
		Certificates: []store.IssuedCertificate{{CA: "ssh-host-ca", Serial: strconv.FormatUint(serial, 10), NotAfter: notAfter},
			{CA: "tls-ca", Serial: serialString(tlsCert.Serial), NotAfter: notAfter}}}
	if err := st.Audit(ctx, ev); err != nil {
		return nil, fmt.Errorf("recording the signing in the audit log: %w", err)
	}
	return []identity.File{
		{Name: "key", Data: sshKeyPEM, Mode: 0o600},
		{Name: "key.pub", Data: []byte(keys.SSHPublicKey()), Mode: 0o644},
		{Name: "key-cert.pub", Data: ssh.MarshalAuthorizedKey(hostCert), Mode: 0o644},
		{Name: "tls.key", Data: tlsKeyPEM, Mode: 0o600},
		{Name: "tls.crt", Data: []byte(tlsCert.PEM()), Mode: 0o644},
		{Name: "ca.crt", Data: cas.TLSCertPEM, Mode: 0o644},
	}, nil
}

// withLocalNames keeps names as given; IP addresses become IP SANs.
func withLocalNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		}
		out = append(out, n)
	}
	return out
}

// AdminSignRequest is what mbot sign --admin asks for: an admin identity
// directory for admin Admin, like the one every start writes to
// <data_dir>/admin, read-only or not.
type AdminSignRequest struct {
	Admin    string
	ReadOnly bool
	// TTL is its lifetime: 0 for admin_identity_ttl, at most max_admin_ttl.
	TTL time.Duration
	// OSUser is who ran the command, for the audit log; empty means the
	// current OS user.
	OSUser string
}

// SignedAdmin is an admin identity directory's files.
type SignedAdmin struct {
	Files    []identity.File
	NotAfter time.Time
}

// SignAdmin issues an admin identity for req.Admin: its certificate's URI
// SAN is spiffe://<cluster>/admin/<name> (mbot lock --admin NAME refuses
// it), and a read-only one is answered only its reads by the admin API.
// admin.json names the authority as the issuer URL does (tls_names, else
// the listen address); --authority overrides it. Every signing, and every
// refused attempt, is recorded in the audit log.
func (a *Authority) SignAdmin(ctx context.Context, req AdminSignRequest) (*SignedAdmin, error) {
	if req.OSUser == "" {
		req.OSUser = currentOSUser()
	}
	ev := &store.AuditEvent{Event: "sign.admin", Remote: "local admin " + req.OSUser,
		Claims: map[string]string{"admin": req.Admin, "os_user": req.OSUser, "read_only": strconv.FormatBool(req.ReadOnly)}}
	signed, err := a.signAdmin(req, ev)
	if err != nil {
		ev.Allowed, ev.Message = false, err.Error()
		var refusal *identity.Error
		if errors.As(err, &refusal) {
			ev.Code, ev.Message = string(refusal.Code), refusal.Message
		}
	}
	if aerr := a.store.Audit(context.WithoutCancel(ctx), ev); aerr != nil {
		if err != nil {
			a.log.Error("recording refused admin signing", "err", aerr)
			return nil, err
		}
		return nil, fmt.Errorf("recording the signing in the audit log: %w", aerr)
	}
	return signed, err
}

func (a *Authority) signAdmin(req AdminSignRequest, ev *store.AuditEvent) (*SignedAdmin, error) {
	// The name becomes the certificate's CN and a SPIFFE path segment.
	if err := identity.CheckName("--admin", req.Admin); err != nil {
		return nil, identity.Errorf(identity.CodeBadRequest, "%v", err)
	}
	if c := a.state.Load().set.ClusterNamed(req.Admin); c != "" {
		return nil, identity.Errorf(identity.CodeBadRequest, "--admin %s is named like a cluster (%s); bots, users and admins may not share a cluster's name: pick another name",
			req.Admin, c)
	}
	ttl, maxTTL := req.TTL, time.Duration(a.cfg.MaxAdminTTL)
	if ttl == 0 {
		ttl = min(time.Duration(a.cfg.AdminIdentityTTL), maxTTL)
	}
	switch {
	case ttl < 0:
		return nil, identity.Errorf(identity.CodeBadRequest, "--ttl %s is negative", ttl)
	case ttl > maxTTL:
		return nil, identity.Errorf(identity.CodeBadRequest, "--ttl %s is above max_admin_ttl (%s) in %s; ask for at most %s, or raise max_admin_ttl if an admin identity that long is really meant",
			shortDuration(ttl), shortDuration(maxTTL), a.cfg.path, shortDuration(maxTTL))
	}
	ev.Claims["ttl"] = shortDuration(ttl)
	_, port, _ := net.SplitHostPort(a.cfg.Listen)
	files, cert, err := a.adminIdentity(req.Admin, time.Now().Add(ttl), req.ReadOnly, a.defaultIssuer(port))
	if err != nil {
		return nil, err
	}
	serial := serialString(cert.Serial)
	kind := "admin identity"
	if req.ReadOnly {
		kind = "read-only admin identity"
	}
	ev.Allowed, ev.NotAfter = true, cert.NotAfter
	ev.Message = fmt.Sprintf("%s %q until %s", kind, req.Admin, cert.NotAfter.UTC().Format(time.RFC3339))
	ev.Serials = []string{"tls:" + serial}
	ev.Certificates = []store.IssuedCertificate{{CA: "tls-ca", Serial: serial, NotAfter: cert.NotAfter}}
	return &SignedAdmin{Files: files, NotAfter: cert.NotAfter}, nil
}

// UserSignRequest is what mbot sign --user asks for: a long-lived identity
// for a person or a service outside CI, signed deliberately by an admin on
// the authority host (what tctl auth sign is to Teleport).
type UserSignRequest struct {
	User  string
	Roles []string
	// Logins is the user's logins trait: the values {{internal.logins}} in
	// the roles' logins expands to. A user has no other traits.
	Logins []string
	TTL    time.Duration
	// Dir is the absolute path the identity will be written to; its
	// ssh_config refers to the other files by it.
	Dir string
	// OSUser is who ran the command, for the audit log; empty means the
	// current OS user.
	OSUser string
}

// SignedUser is an identity directory's files and what they grant.
type SignedUser struct {
	Files  []identity.File
	Output identity.OutputResponse
	// Warnings say what the signer may not have meant (a template that
	// expanded to nothing, a role max_ttl this signing is above).
	Warnings []string
}

// userSummary is identity.json of a signed user: the fields of a bot's
// identity.json, with bot and join token empty, and who it is for and who signed it.
type userSummary struct {
	identity.Summary
	User     string `json:"user"`
	SignedBy string `json:"signed_by"`
}

// SignUser issues an identity directory like mbot issue writes, for user
// req.User with the logins of req.Roles, valid for req.TTL. Unlike a bot's,
// its lifetime may exceed the 24h bot cap, up to max_admin_ttl; a longer
// request is refused, never shortened. Roles that require per-session MFA
// or Device Trust are refused: a credential in files satisfies neither.
// Every signing, and every refused attempt, is recorded in the audit log.
func (a *Authority) SignUser(ctx context.Context, req UserSignRequest) (*SignedUser, error) {
	if req.OSUser == "" {
		req.OSUser = currentOSUser()
	}
	ev := &store.AuditEvent{Event: "sign.user", Roles: req.Roles, Remote: "local admin " + req.OSUser,
		Claims: map[string]string{"user": req.User, "os_user": req.OSUser, "ttl": shortDuration(req.TTL)}}
	signed, err := a.signUser(ctx, req, ev)
	if err != nil {
		ev.Allowed, ev.Message = false, err.Error()
		ev.Serials, ev.NotAfter, ev.Certificates = nil, time.Time{}, nil // nothing was handed out
		var refusal *identity.Error
		if errors.As(err, &refusal) {
			ev.Code, ev.Message = string(refusal.Code), refusal.Message
		}
		if aerr := a.store.Audit(context.WithoutCancel(ctx), ev); aerr != nil {
			a.log.Error("recording refused user signing", "err", aerr)
		}
		return nil, err
	}
	return signed, nil
}

func (a *Authority) signUser(ctx context.Context, req UserSignRequest, ev *store.AuditEvent) (*SignedUser, error) {
	// The user name becomes the certificate's CN, a SPIFFE path segment
	// (/user/NAME) and part of the SSH key ID: a name like a bot's.
	if err := identity.CheckName("--user", req.User); err != nil {
		return nil, identity.Errorf(identity.CodeBadRequest, "%v", err)
	}
	if c := a.state.Load().set.ClusterNamed(req.User); c != "" {
		return nil, identity.Errorf(identity.CodeBadRequest, "--user %s is named like a cluster (%s); bots, users and admins may not share a cluster's name, so that no certificate of this authority reads like a cluster's: pick another name",
			req.User, c)
	}
	if len(req.Roles) == 0 {
		return nil, identity.Errorf(identity.CodeBadRequest, "--roles is required: name the roles whose logins user %q gets", req.User)
	}
	for _, r := range req.Roles {
		if err := identity.CheckName("--roles", r); err != nil {
			return nil, identity.Errorf(identity.CodeBadRequest, "%v", err)
		}
	}
	for _, l := range req.Logins {
		if err := identity.CheckLogin("--logins", l); err != nil {
			return nil, identity.Errorf(identity.CodeBadRequest, "%v", err)
		}
	}
	maxTTL := time.Duration(a.cfg.MaxAdminTTL)
	switch {
	case req.TTL <= 0:
		return nil, identity.Errorf(identity.CodeBadRequest, "--ttl is required: say how long the credential for user %q lives (at most max_admin_ttl, %s)", req.User, shortDuration(maxTTL))
	case req.TTL > maxTTL:
		return nil, identity.Errorf(identity.CodeBadRequest, "--ttl %s is above max_admin_ttl (%s) in %s; ask for at most %s, or raise max_admin_ttl if credentials that long are really meant",
			shortDuration(req.TTL), shortDuration(maxTTL), a.cfg.path, shortDuration(maxTTL))
	}
	// The cluster-wide settings are for people, and a signed user is one.
	if a.cfg.RequireSessionMFA {
		return nil, identity.Errorf(identity.CodeRoleDenied, "%s sets require_session_mfa: true, and a long-lived credential in files cannot do per-session MFA; user %q must log in interactively",
			a.cfg.path, req.User)
	}
	if m := a.cfg.DeviceTrustMode; m == "required" || m == "required-for-humans" {
		return nil, identity.Errorf(identity.CodeRoleDenied, "%s sets device_trust_mode: %s, and a credential in files is not bound to a trusted device; user %q must log in from a trusted device",
			a.cfg.path, m, req.User)
	}
	if !filepath.IsAbs(req.Dir) {
		return nil, fmt.Errorf("the identity directory %q must be an absolute path", req.Dir)
	}

	if a.fixing {
		return nil, identity.Errorf(identity.CodeRoleDenied, "the stored resources do not load (see the warning above); replace or remove what it names before signing")
	}
	set := a.Resources()
	traits := map[string][]string{"logins": req.Logins}
	var logins, roles []string
	var specs []*resources.RoleSpec
	out := &SignedUser{}
	for _, rn := range req.Roles {
		if slices.Contains(roles, rn) {
			continue
		}
		role, ok := set.Roles[rn]
		if !ok {
			known := strings.Join(slices.Sorted(maps.Keys(set.Roles)), ", ")
			if known == "" {
				known = "none yet (resources: files are stored when the authority starts)"
			}
			return nil, identity.Errorf(identity.CodeRoleDenied, "there is no role named %q on this authority; its roles: %s", rn, known)
		}
		if role.Spec.RequireSessionMFA {
			return nil, identity.Errorf(identity.CodeRoleDenied, "role %q sets require_session_mfa: true, and a long-lived credential in files cannot do per-session MFA; sign with a role without it, or have user %q log in interactively",
				rn, req.User)
		}
		if m := role.Spec.DeviceTrustMode; m == "required" || m == "required-for-humans" {
			return nil, identity.Errorf(identity.CodeRoleDenied, "role %q sets device_trust_mode: %s, and a credential in files is not bound to a trusted device; sign with a role without it",
				rn, m)
		}
		if m := time.Duration(role.Spec.MaxTTL); m > 0 && m < req.TTL {
			out.Warnings = append(out.Warnings, fmt.Sprintf("role %q has max_ttl %s, which caps bots; this deliberate signing is bounded by max_admin_ttl (%s) instead and lives %s",
				rn, shortDuration(m), shortDuration(maxTTL), shortDuration(req.TTL)))
		}
		roles = append(roles, rn)
		specs = append(specs, &role.Spec)
		for _, tmpl := range role.Spec.Logins {
			expanded := policy.ExpandTemplate(tmpl, traits)
			if len(expanded) == 0 {
				out.Warnings = append(out.Warnings, fmt.Sprintf("role %q: login %q expands to nothing for user %q; pass --logins to set the user's logins trait", rn, tmpl, req.User))
			}
			for _, l := range expanded {
				if !slices.Contains(logins, l) {
					logins = append(logins, l)
				}
			}
		}
	}
	if err := checkPrincipals(logins); err != nil {
		return nil, err
	}
	principals := logins
	if len(principals) == 0 {
		// As for bots: no principals would mean every login to OpenSSH.
		principals = []string{noLoginPrincipal + "user-" + req.User}
		out.Warnings = append(out.Warnings, fmt.Sprintf("user %q gets no SSH logins from roles %s; the certificate logs in nowhere", req.User, strings.Join(roles, ", ")))
	}

	keys, err := identity.NewKeys()
	if err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(keys.SSH.Public())
	if err != nil {
		return nil, err
	}
	notAfter := time.Now().Add(req.TTL).Truncate(time.Second)
	if notAfter.After(a.CAs().TLSCert.NotAfter) {
		// Nothing signed by the TLS CA may outlive it; say so rather than hand
		// out an SSH certificate that outlives its TLS twin.
		return nil, identity.Errorf(identity.CodeBadRequest, "--ttl %s would outlive the authority's TLS CA, which expires %s; ask for less",
			shortDuration(req.TTL), a.CAs().TLSCert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial := RandomSSHSerial()
	sshCert, err := a.CAs().SignSSHUser(SSHCertRequest{
		Key:        sshPub,
		KeyID:      fmt.Sprintf("user=%s signed_by=%s serial=%d", req.User, req.OSUser, serial),
		Principals: principals,
		NotAfter:   notAfter,
		Serial:     serial,
		// A signed user gets what the roles grant, as a bot does: the
		// roles are the one place that says what a session may do.
		Extensions: policy.SSHExtensions(specs...),
	})
	if err != nil {
		return nil, err
	}
	// CN = user and a SPIFFE ID under /user/, so that no user certificate
	// can pass for a bot (/bot/) or an admin (/admin/).
	tlsCert, err := a.CAs().signTLS(&x509.Certificate{
		Subject:     pkix.Name{CommonName: req.User, Organization: []string{a.cfg.ClusterName}, OrganizationalUnit: roles},
		URIs:        []*url.URL{{Scheme: "spiffe", Host: a.cfg.ClusterName, Path: "/user/" + req.User}},
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, keys.TLS.Public())
	if err != nil {
		return nil, err
	}
	out.Output = identity.OutputResponse{
		Name:           "identity",
		Roles:          roles,
		Logins:         nonNil(logins),
		SSHCertificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshCert))),
		TLSCertificate: tlsCert.PEM(),
		SSHSerial:      serial,
		TLSSerial:      serialString(tlsCert.Serial),
		NotBefore:      tlsCert.NotBefore,
		NotAfter:       notAfter,
	}
	resp := &identity.JoinResponse{
		ClusterName:  a.cfg.ClusterName,
		Bot:          req.User, // names the key and ssh_config; identity.json says user below
		Method:       "sign",
		TLSCA:        string(a.CAs().TLSCertPEM),
		SSHHostCA:    a.CAs().SSHHostCAKeys(),
		HostPatterns: a.cfg.SSH.HostPatterns,
		Outputs:      []identity.OutputResponse{out.Output},
	}
	files, err := identity.RenderIdentityOf(fmt.Sprintf("user %q", req.User), req.Dir, keys, resp, &out.Output)
	if err != nil {
		return nil, err
	}
	sum := userSummary{User: req.User, SignedBy: req.OSUser, Summary: identity.Summary{
		Cluster: a.cfg.ClusterName, Method: "sign", Output: out.Output.Name, Roles: roles, Logins: out.Output.Logins,
		NotBefore: out.Output.NotBefore, NotAfter: notAfter}}
	sum.Serials.SSH, sum.Serials.TLS = serial, out.Output.TLSSerial
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	for i := range files {
		if files[i].Name == identity.FileIdentityJSON {
			files[i].Data = append(sumJSON, '\n')
		}
	}

	// Recorded before the files are handed out: no credential without its audit record.
	ev.Allowed, ev.Roles, ev.NotAfter = true, roles, notAfter
	ev.Serials = []string{fmt.Sprintf("ssh:%d", serial), "tls:" + out.Output.TLSSerial}
	ev.Certificates = []store.IssuedCertificate{{CA: "ssh-user-ca", Serial: strconv.FormatUint(serial, 10), NotAfter: notAfter, Roles: roles},
		{CA: "tls-ca", Serial: out.Output.TLSSerial, NotAfter: notAfter, Roles: roles}}
	ev.Claims["logins"] = strings.Join(logins, ",")
	ev.Message = fmt.Sprintf("long-lived identity for user %s (roles %s, logins %s) valid %s, signed by OS user %s",
		req.User, strings.Join(roles, ","), strings.Join(logins, ","), shortDuration(req.TTL), req.OSUser)
	if err := a.store.Audit(ctx, ev); err != nil {
		return nil, fmt.Errorf("recording the signing in the audit log (no credential was handed out): %w", err)
	}
	out.Files = files
	return out, nil
}

// shortDuration prints 720h rather than 720h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// currentOSUser names who runs the process, and through sudo whom.
func currentOSUser() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if name == "" {
		name = fmt.Sprintf("uid %d", os.Getuid())
	}
	if sudo := os.Getenv("SUDO_USER"); sudo != "" && sudo != name {
		name += " (sudo from " + sudo + ")"
	}
	return name
}
