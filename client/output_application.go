package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// OutputTypeApplication writes an X.509-SVID for mutual TLS between
// services (SPIFFE), in the files tbot and the SPIFFE helper write.
const OutputTypeApplication = "application"

// Files of an application output.
const (
	FileSVID       = "svid.pem"
	FileSVIDKey    = "svid_key.pem"
	FileSVIDBundle = "svid_bundle.pem"
	// FileApplicationJSON says what the output holds.
	FileApplicationJSON = "application.json"
)

func init() {
	outputKinds[OutputTypeApplication] = applicationOutput{}
	identity.RegisterFiles(FileSVID, FileSVIDKey, FileSVIDBundle, FileApplicationJSON)
}

// ApplicationOutput is what an application output asks for in mbot.yaml:
//
//   - type: application
//     destination: ./svid
//     spiffe_id: /ci/payments/app   # optional; default spiffe://<cluster>/bot/<bot>
//     dns_sans: [api.svc.acme.internal]  # optional
//
// Roles grant the SPIFFE ID in spiffe_ids and each DNS SAN in dns_sans.
// spiffe_id is shared with workload-identity-jwt outputs (their subject).
type ApplicationOutput struct {
	// SPIFFEID is a path in the cluster's trust domain or a whole
	// spiffe://<cluster>/... ID.
	SPIFFEID string   `yaml:"spiffe_id"`
	DNSSANs  []string `yaml:"dns_sans"`
}

// CheckAndSetDefaults checks an application output's fields; the
// authority checks them again, and whether the bot's roles grant them.
func (a *ApplicationOutput) CheckAndSetDefaults() error {
	if err := checkSPIFFEIDField(a.SPIFFEID); err != nil {
		return err
	}
	for i, name := range a.DNSSANs {
		if err := identity.CheckDNSPattern("dns_sans entry", name); err != nil {
			return badField("dns_sans", "%v", err)
		}
		if strings.HasPrefix(name, "*.") {
			return badField("dns_sans", "%s is a wildcard; an SVID is issued for DNS names, not patterns", identity.Quote(name))
		}
		if slices.Contains(a.DNSSANs[:i], name) {
			return badField("dns_sans", "lists %s twice", identity.Quote(name))
		}
	}
	return nil
}

// checkSPIFFEIDField checks spiffe_id as written in mbot.yaml: empty, a
// path, or a whole SPIFFE ID. The cluster checks its trust domain.
func checkSPIFFEIDField(s string) error {
	switch {
	case s == "":
		return nil
	case strings.HasPrefix(s, "/"):
		if err := identity.CheckSPIFFEPath("spiffe_id", s); err != nil {
			return badField("spiffe_id", "%v", err)
		}
		return nil
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return badField("spiffe_id", "%s is neither a path (/ci/team/app) nor a SPIFFE ID (spiffe://<cluster>/ci/team/app): %v", identity.Quote(identity.Truncate(s, 64)), err)
	}
	if err := identity.CheckSPIFFEPath("spiffe_id", id.Path()); err != nil {
		return badField("spiffe_id", "%v", err)
	}
	return nil
}

type applicationOutput struct{}

func (applicationOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (applicationOutput) setFields(o *Output) []string {
	var set []string
	if o.SPIFFEID != "" {
		set = append(set, "spiffe_id")
	}
	if len(o.DNSSANs) > 0 {
		set = append(set, "dns_sans")
	}
	return set
}

func (applicationOutput) checkAndSetDefaults(o *Output) error {
	return o.ApplicationOutput.CheckAndSetDefaults()
}

func (applicationOutput) request(o *Output, req *identity.OutputRequest) {
	req.Application = &identity.ApplicationRequest{SPIFFEID: o.SPIFFEID, DNSSANs: o.DNSSANs}
}

// ApplicationSummary is application.json: what an application output holds.
type ApplicationSummary struct {
	Cluster   string    `json:"cluster"`
	Bot       string    `json:"bot"`
	Output    string    `json:"output"`
	Type      string    `json:"type"`
	SPIFFEID  string    `json:"spiffe_id"`
	DNSSANs   []string  `json:"dns_sans,omitempty"`
	Roles     []string  `json:"roles"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Serial    string    `json:"serial"`
	// Files names each file written, by purpose.
	Files map[string]string `json:"files"`
}

func (applicationOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	g := grant.Application
	if g == nil {
		return nil, errors.New("the authority's answer holds no application grant")
	}
	if err := checkCertificate(grant.TLSCertificate, keys.TLS); err != nil {
		return nil, err
	}
	if err := checkPEMCertificates("SPIFFE bundle", g.Bundle); err != nil {
		return nil, err
	}
	keyPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	// The SVID is checked as its users will read it: go-spiffe's rules for
	// an X.509-SVID, the ID the answer names, a chain to the bundle.
	svid, err := x509svid.Parse([]byte(grant.TLSCertificate), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the authority's certificate is no X.509-SVID: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(resp.ClusterName)
	if err != nil {
		return nil, fmt.Errorf("the authority's cluster name is no SPIFFE trust domain: %w", err)
	}
	if svid.ID.String() != g.SPIFFEID || svid.ID.TrustDomain() != td || identity.CheckSPIFFEPath("spiffe_id", svid.ID.Path()) != nil {
		return nil, fmt.Errorf("the authority's X.509-SVID is for %s, not the SPIFFE ID its answer names in trust domain %s", identity.Quote(svid.ID.String()), td)
	}
	leaf := svid.Certificates[0]
	if !slices.Equal(leaf.DNSNames, g.DNSSANs) {
		return nil, errors.New("the authority's X.509-SVID holds other DNS names than its answer names")
	}
	for _, name := range g.DNSSANs {
		if err := identity.CheckDNSPattern("DNS SAN", name); err != nil || strings.HasPrefix(name, "*.") {
			return nil, fmt.Errorf("the authority's answer: DNS SAN %s is not a DNS name", identity.Quote(identity.Truncate(name, 64)))
		}
	}
	bundle, err := x509bundle.Parse(td, []byte(g.Bundle))
	if err != nil {
		return nil, fmt.Errorf("the authority's SPIFFE bundle: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		return nil, fmt.Errorf("the authority's X.509-SVID does not verify under its SPIFFE bundle: %w", err)
	}
	sum := ApplicationSummary{Cluster: resp.ClusterName, Bot: resp.Bot, Output: grant.Name, Type: OutputTypeApplication,
		SPIFFEID: g.SPIFFEID, DNSSANs: g.DNSSANs, Roles: grant.Roles, NotBefore: grant.NotBefore, NotAfter: grant.NotAfter, Serial: grant.TLSSerial,
		Files: map[string]string{"svid": FileSVID, "key": FileSVIDKey, "bundle": FileSVIDBundle}}
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return []identity.File{
		{Name: FileSVID, Data: []byte(ensureNewline(grant.TLSCertificate)), Mode: 0o644},
		{Name: FileSVIDKey, Data: keyPEM, Mode: 0o600},
		{Name: FileSVIDBundle, Data: []byte(ensureNewline(g.Bundle)), Mode: 0o644},
		{Name: FileApplicationJSON, Data: append(sumJSON, '\n'), Mode: 0o600},
	}, nil
}

// config is the type's own mbot.yaml fields.
func (applicationOutput) config() any { return ApplicationOutput{} }
