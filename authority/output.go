package authority

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// outputKind is the authority's half of one output type (SPEC §7): what
// the request must carry and how it is signed. Each lives in its own file,
// output_<type>.go, and registers itself in outputKinds; the join path
// does not change when one is added.
type outputKind interface {
	// keys says which public keys the type certifies; a request carrying
	// another is refused.
	keys() (sshKey, tlsKey bool)
	// signers names the CAs that sign its SSH and X.509 certificates as
	// mbot authority export --type does ("" for none): what its issued
	// certificates are recorded under, and whose revocation list has them.
	signers() (sshCA, tlsCA string)
	// checkRequest checks the type's own request fields (shape and names)
	// before the proof is verified, so that a bad request leaves the proof usable.
	checkRequest(out *identity.OutputRequest) error
	// sign grants the output: it checks what is asked against the grant
	// and the resources, and certifies the keys.
	sign(sc *signCtx) (*identity.OutputResponse, error)
	// audit says what a signed output was granted, for the audit record.
	audit(resp *identity.OutputResponse) string
}

// outputKinds are the output types the authority signs, by name.
var outputKinds = map[string]outputKind{}

// outputTypeNames lists outputKinds, sorted.
func outputTypeNames() []string { return slices.Sorted(maps.Keys(outputKinds)) }

// signCtx is everything an output kind signs from.
type signCtx struct {
	cas     *CAs
	cluster string
	// root is the root cluster of an exchanged identity, "" for the
	// cluster's own bots.
	root      string
	set       *resources.Set
	bot       *resources.Bot
	joinToken string
	out       *identity.OutputRequest
	// grant is the output's resolved roles, logins, granted values and TTL.
	grant    *policy.Grant
	keys     outputKeys
	lineage  identity.Lineage
	notAfter time.Time
	// issuer is the authority's OIDC issuer URL, the iss of JWT-SVIDs.
	issuer string
	// claims are the join's identifying claims, for the certificates'
	// provenance (provenance.go); none for renewals and exchanges.
	claims map[string]string
}

// botName is the signing bot's name.
func (sc *signCtx) botName() string { return sc.bot.Metadata.Name }

// The names an exchanged identity's certificates carry, apart from the
// leaf's own bot of the same name (docs/trusted-clusters.md, "Exchanged
// identities"): SPIFFE ID spiffe://<leaf>/mbot/cluster/<root>/bot/<bot>
// (URI SAN, JWT-SVID sub), X.509 subject CN=<root>/<bot>,
// O=mbot-root:<root>, SSH key ID bot=<root>/<bot> cluster=<root>. Own bots
// keep /bot/<bot>, CN=<bot>, O=<cluster>, bot=<bot>.

// subjectName is the CN of the identity's certificates and the name its
// SSH key IDs give: the bot, or <root>/<bot> when exchanged.
func (sc *signCtx) subjectName() string {
	if sc.root != "" {
		return identity.ExchangedSubject(sc.root, sc.botName())
	}
	return sc.botName()
}

// organization is the O of the identity's certificates.
func (sc *signCtx) organization() string {
	if sc.root != "" {
		return identity.ExchangedOrganization(sc.root)
	}
	return sc.cluster
}

// defaultSPIFFEPath is the SPIFFE ID path of an output that asks for none.
func (sc *signCtx) defaultSPIFFEPath() string {
	if sc.root != "" {
		return identity.ExchangedSPIFFEPath(sc.root, sc.botName())
	}
	return "/bot/" + sc.botName()
}

// keyIDName starts the SSH key IDs: who the certificate is for.
func (sc *signCtx) keyIDName() string {
	if sc.root != "" {
		return fmt.Sprintf("bot=%s cluster=%s", sc.subjectName(), sc.root)
	}
	return "bot=" + sc.botName()
}

// x509Response is the answer for an output of type typ whose one
// certificate is cert (database, kubernetes, application): the caller adds
// its type's grant.
func (sc *signCtx) x509Response(typ string, cert *SignedCert) *identity.OutputResponse {
	return &identity.OutputResponse{
		Name:           sc.out.Name,
		Type:           typ,
		Roles:          sc.grant.Roles,
		Logins:         []string{},
		TLSCertificate: cert.PEM(),
		TLSSerial:      serialString(cert.Serial),
		NotBefore:      cert.NotBefore,
		NotAfter:       cert.NotAfter,
	}
}

type outputKeys struct {
	ssh ssh.PublicKey
	tls any
}

// checkOutput checks one output of a join or renewal, its type and the
// keys it carries, and parses them.
func checkOutput(out *identity.OutputRequest) (outputKeys, error) {
	kind, ok := outputKinds[out.OutputType()]
	if !ok {
		return outputKeys{}, identity.Errorf(identity.CodeBadRequest, "output %q: type %s is not an output type of this authority (%s)",
			out.Name, identity.Quote(identity.Truncate(out.Type, 40)), strings.Join(outputTypeNames(), ", "))
	}
	for typ, set := range map[string]bool{
		identity.OutputDatabase: out.Database != nil, identity.OutputKubernetes: out.Kubernetes != nil,
		identity.OutputApplication: out.Application != nil, identity.OutputJWT: out.JWT != nil, identity.OutputSSHHost: out.SSHHost != nil,
		identity.OutputDatabaseServer: out.DatabaseServer != nil,
	} {
		if set && typ != out.OutputType() {
			return outputKeys{}, identity.Errorf(identity.CodeBadRequest, "output %q of type %s carries a %s request; send only its own type's", out.Name, out.OutputType(), typ)
		}
	}
	if err := kind.checkRequest(out); err != nil {
		return outputKeys{}, err
	}
	var keys outputKeys
	wantSSH, wantTLS := kind.keys()
	switch {
	case wantSSH:
		sshKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.SSHPublicKey))
		if err != nil {
			return keys, identity.Errorf(identity.CodeBadRequest, "output %q: ssh_public_key is not an authorized_keys line (%s)", out.Name, quoteError(err))
		}
		if err := checkSSHKey(sshKey); err != nil {
			return keys, identity.Errorf(identity.CodeUnsupportedKey, "output %q: ssh_public_key: %v", out.Name, err)
		}
		keys.ssh = sshKey
	case out.SSHPublicKey != "":
		return keys, identity.Errorf(identity.CodeBadRequest, "output %q: a %s output certifies no SSH key; send no ssh_public_key", out.Name, out.OutputType())
	}
	switch {
	case wantTLS:
		tlsKey, err := identity.ParseTLSPublicKey(out.TLSPublicKey)
		if err != nil {
			return keys, identity.Errorf(identity.CodeBadRequest, "output %q: the tls_public_key is refused (%s)", out.Name, quoteError(err))
		}
		// Checked here, before the proof is verified and consumed, so that a
		// refused key leaves the proof usable with a good one.
		if err := identity.CheckPublicKey(tlsKey); err != nil {
			return keys, identity.Errorf(identity.CodeUnsupportedKey, "output %q: tls_public_key: %v", out.Name, err)
		}
		keys.tls = tlsKey
	case out.TLSPublicKey != "":
		return keys, identity.Errorf(identity.CodeBadRequest, "output %q: a %s output certifies no TLS key; send no tls_public_key", out.Name, out.OutputType())
	}
	return keys, nil
}

// grantMatchers match a value against a role field's entries, for the
// fields whose entries are patterns; the others match equal.
var grantMatchers = map[string]func(pattern, value string) bool{
	resources.FieldHostNames:     identity.MatchDNSPattern,
	resources.FieldDNSSANs:       identity.MatchDNSPattern,
	resources.FieldSPIFFEIDs:     identity.MatchSPIFFEPattern,
	resources.FieldDBServerNames: identity.MatchServerName,
}

// notGranted is the refusal of a value no role the output uses grants:
// it names the roles that would (the bot's roles the output left out, or
// roles the bot does not hold) and otherwise the role field to add it to.
func notGranted(sc *signCtx, field, what, value string) error {
	match := grantMatchers[field]
	if match == nil {
		match = func(granted, value string) bool { return granted == value }
	}
	grants := func(rn string) bool {
		role, ok := sc.set.Roles[rn]
		if !ok {
			return false
		}
		for _, f := range resources.GrantFields {
			if f.Name != field {
				continue
			}
			for _, tmpl := range f.Get(&role.Spec) {
				if slices.ContainsFunc(resources.ExpandTemplate(tmpl, sc.bot.Spec.Traits), func(g string) bool { return match(g, value) }) {
					return true
				}
			}
		}
		return false
	}
	v := identity.Quote(identity.Truncate(value, 64))
	var held, other []string
	for _, rn := range slices.Sorted(maps.Keys(sc.set.Roles)) {
		switch {
		case !grants(rn):
		case slices.Contains(sc.bot.Spec.Roles, rn):
			held = append(held, rn)
		default:
			other = append(other, rn)
		}
	}
	switch {
	case len(held) > 0:
		return identity.Errorf(identity.CodeRoleDenied, "output %q: %s %s is granted by role %s of bot %q, which this output does not use; add the role to the output's roles: (or list none to use all)",
			sc.out.Name, what, v, strings.Join(held, ", "), sc.botName())
	case len(other) > 0:
		return identity.Errorf(identity.CodeRoleDenied, "output %q: no role of bot %q grants %s %s; role %s would grant it: add it to the bot's spec.roles, or add %s to the %s of one of its roles (%s)",
			sc.out.Name, sc.botName(), what, v, strings.Join(other, ", "), v, field, strings.Join(sc.bot.Spec.Roles, ", "))
	}
	return identity.Errorf(identity.CodeRoleDenied, "output %q: no role of bot %q grants %s %s; add it to the %s of one of its roles (%s)",
		sc.out.Name, sc.botName(), what, v, field, strings.Join(sc.bot.Spec.Roles, ", "))
}

// auditList formats a granted list for the audit record.
func auditList(key string, values []string) string {
	if len(values) == 0 {
		return ""
	}
	return fmt.Sprintf(" %s=%s", key, strings.Join(values, ","))
}
