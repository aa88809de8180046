package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// applicationOutput is the application output type: an X.509-SVID (one
// SPIFFE ID as its only URI SAN, DNS SANs the roles allow) signed by the
// spiffe CA, and that CA as the trust bundle. Granted by role fields
// spiffe_ids and dns_sans.
type applicationOutput struct{}

func init() { outputKinds[identity.OutputApplication] = applicationOutput{} }

func (applicationOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (applicationOutput) signers() (sshCA, tlsCA string) { return "", "spiffe-ca" }

func (applicationOutput) checkRequest(out *identity.OutputRequest) error {
	r := out.Application
	if r == nil {
		// Everything is optional: the default SPIFFE ID, no DNS SANs.
		out.Application = &identity.ApplicationRequest{}
		r = out.Application
	}
	if err := checkSPIFFEIDRequest(r.SPIFFEID); err != nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
	}
	return checkDNSSANs(out.Name, r.DNSSANs)
}

// checkDNSSANs checks asked DNS SANs: DNS names without wildcards, each once.
func checkDNSSANs(output string, sans []string) error {
	if len(sans) > 32 {
		return identity.Errorf(identity.CodeBadRequest, "output %q asks for %d DNS SANs; at most 32", output, len(sans))
	}
	for i, name := range sans {
		if err := identity.CheckDNSPattern("dns_sans", name); err != nil || strings.HasPrefix(name, "*.") {
			return identity.Errorf(identity.CodeBadRequest, "output %q: dns_sans entry %s is not a DNS name (letters, digits, '-' and '_' in dot-separated labels; no wildcards)",
				output, identity.Quote(identity.Truncate(name, 64)))
		}
		if slices.Contains(sans[:i], name) {
			return identity.Errorf(identity.CodeBadRequest, "output %q: dns_sans lists %s twice", output, identity.Quote(name))
		}
	}
	return nil
}

// checkSPIFFEIDRequest checks the shape of an output's spiffe_id: empty
// (the bot's default), a path, or a whole spiffe:// ID. Its trust domain
// is checked against the cluster when signing.
func checkSPIFFEIDRequest(asked string) error {
	switch {
	case asked == "":
		return nil
	case strings.HasPrefix(asked, "/"):
		return identity.CheckSPIFFEPath("spiffe_id", asked)
	}
	id, err := spiffeid.FromString(asked)
	if err != nil {
		return fmt.Errorf("spiffe_id %s is neither a path (/ci/team/app) nor a SPIFFE ID (spiffe://<cluster>/ci/team/app): %v",
			identity.Quote(identity.Truncate(asked, 64)), err)
	}
	return identity.CheckSPIFFEPath("spiffe_id", id.Path())
}

// spiffeIDFor resolves an output's spiffe_id in the cluster's trust domain
// (default /bot/<bot>, /mbot/cluster/<root>/bot/<bot> for an exchanged
// identity) and checks that the output's roles grant it.
func spiffeIDFor(sc *signCtx, asked string) (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(sc.cluster)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("cluster name %q is no SPIFFE trust domain: %w", sc.cluster, err)
	}
	if err := checkSPIFFEIDRequest(asked); err != nil { // again, whatever path it came by
		return spiffeid.ID{}, identity.Errorf(identity.CodeBadRequest, "output %q: %v", sc.out.Name, err)
	}
	var id spiffeid.ID
	switch {
	case asked == "":
		id, err = spiffeid.FromPath(td, sc.defaultSPIFFEPath())
	case strings.HasPrefix(asked, "/"):
		id, err = spiffeid.FromPath(td, asked)
	default:
		id, err = spiffeid.FromString(asked)
		if err == nil && id.TrustDomain() != td {
			return spiffeid.ID{}, identity.Errorf(identity.CodeBadRequest, "output %q: spiffe_id %s is in trust domain %s; this authority issues SPIFFE IDs of its cluster, %s only (write the path alone: %s)",
				sc.out.Name, identity.Quote(asked), identity.Quote(id.TrustDomain().Name()), sc.cluster, id.Path())
		}
	}
	if err != nil {
		return spiffeid.ID{}, identity.Errorf(identity.CodeBadRequest, "output %q: spiffe_id: %v", sc.out.Name, err)
	}
	path := id.Path()
	if err := identity.CheckSPIFFEPath("spiffe_id", path); err != nil {
		return spiffeid.ID{}, identity.Errorf(identity.CodeBadRequest, "output %q: %v", sc.out.Name, err)
	}
	if err := checkSPIFFENamespace(sc, path); err != nil {
		return spiffeid.ID{}, err
	}
	if !slices.ContainsFunc(sc.grant.Granted(resources.FieldSPIFFEIDs), func(p string) bool { return identity.MatchSPIFFEPattern(p, path) }) {
		return spiffeid.ID{}, notGranted(sc, resources.FieldSPIFFEIDs, "SPIFFE ID path", path)
	}
	return id, nil
}

// checkSPIFFENamespace keeps the leaf's own bots and exchanged identities
// apart whatever the roles grant: /mbot/ is the authority's (an exchanged
// identity holds its own /mbot/cluster/<root>/bot/<bot> there and nothing
// else, an own bot nothing), and /bot/ is the own bots' (an exchanged
// identity holds nothing there).
func checkSPIFFENamespace(sc *signCtx, path string) error {
	own := path == sc.defaultSPIFFEPath()
	switch {
	case strings.HasPrefix(path, identity.ReservedSPIFFEPrefix) && !(own && sc.root != ""):
		return identity.Errorf(identity.CodeRoleDenied, "output %q: SPIFFE ID path %s is under %s, which the authority names itself (tunnels, identities exchanged from a root cluster) and no role grants; ask for a path outside it (or none for %s)",
			sc.out.Name, identity.Quote(identity.Truncate(path, 64)), identity.ReservedSPIFFEPrefix, sc.defaultSPIFFEPath())
	case sc.root != "" && strings.HasPrefix(path, "/bot/"):
		return identity.Errorf(identity.CodeRoleDenied, "output %q: SPIFFE ID path %s names a bot of cluster %s, and bot %q of root cluster %s is not one: its SPIFFE ID is %s (ask for none, or a path outside /bot/)",
			sc.out.Name, identity.Quote(identity.Truncate(path, 64)), sc.cluster, sc.botName(), sc.root, sc.defaultSPIFFEPath())
	}
	return nil
}

func (applicationOutput) audit(resp *identity.OutputResponse) string {
	g := resp.Application
	return fmt.Sprintf("%s type=application spiffe_id=%s", resp.Name, g.SPIFFEID) + auditList("dns_sans", g.DNSSANs)
}

func (applicationOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	r := sc.out.Application
	id, err := spiffeIDFor(sc, r.SPIFFEID)
	if err != nil {
		return nil, err
	}
	if err := checkDNSSANs(sc.out.Name, r.DNSSANs); err != nil {
		return nil, err
	}
	for _, name := range r.DNSSANs {
		if !slices.ContainsFunc(sc.grant.Granted(resources.FieldDNSSANs), func(p string) bool { return identity.MatchDNSPattern(p, name) }) {
			return nil, notGranted(sc, resources.FieldDNSSANs, "DNS SAN", name)
		}
	}
	uri, err := url.Parse(id.String())
	if err != nil {
		return nil, err
	}
	// An X.509-SVID leaf (SPIFFE X509-SVID §4, §5): exactly one URI SAN,
	// no CA, digitalSignature only; it serves both ends of mutual TLS.
	cert, err := sc.cas.SPIFFE.Sign(&x509.Certificate{
		Subject:               pkix.Name{Organization: []string{sc.organization()}},
		URIs:                  []*url.URL{uri},
		DNSNames:              r.DNSSANs,
		NotAfter:              sc.notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		ExtraExtensions:       sc.provenance(),
	}, sc.keys.tls)
	if err != nil {
		return nil, err
	}
	resp := sc.x509Response(identity.OutputApplication, cert)
	resp.Application = &identity.ApplicationGrant{
		SPIFFEID: id.String(),
		DNSSANs:  r.DNSSANs,
		Bundle:   string(sc.cas.SPIFFE.CertPEM),
	}
	return resp, nil
}
