package authority

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// identityOutput is the identity output type: an SSH user certificate for
// the grant's logins (ssh-user CA) and an X.509 client certificate with CN
// = bot name and the bot's SPIFFE ID (tls CA); an exchanged identity's
// name the root too (signCtx.subjectName).
type identityOutput struct{}

func init() { outputKinds[identity.OutputIdentity] = identityOutput{} }

func (identityOutput) keys() (sshKey, tlsKey bool) { return true, true }

func (identityOutput) signers() (sshCA, tlsCA string) { return "ssh-user-ca", "tls-ca" }

func (identityOutput) checkRequest(*identity.OutputRequest) error { return nil }

func (identityOutput) audit(resp *identity.OutputResponse) string {
	return resp.Name + " type=identity" + auditList("logins", resp.Logins)
}

// sign certifies one output's keys for its grant.
func (identityOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	g, keys := sc.grant, sc.keys
	notAfter := sc.notAfter
	serial := RandomSSHSerial()
	if err := checkPrincipals(g.Logins); err != nil {
		return nil, err
	}
	principals := g.Logins
	if len(principals) == 0 {
		// OpenSSH reads a certificate without principals as valid for every
		// login, so a bot with no logins gets one that matches no account.
		principals = []string{noLoginPrincipal + sc.subjectName()}
	}
	keyID := fmt.Sprintf("%s join_token=%s output=%s serial=%d", sc.keyIDName(), sc.joinToken, sc.out.Name, serial) + provenanceKeyID(sc.claims)
	extensions := sc.provenance()
	if sc.lineage.Generation > 0 {
		keyID += fmt.Sprintf(" generation=%d", sc.lineage.Generation)
		ext, err := sc.lineage.Extension()
		if err != nil {
			return nil, err
		}
		extensions = append(extensions, ext)
	}
	sshCert, err := sc.cas.SignSSHUser(SSHCertRequest{
		Key:        keys.ssh,
		KeyID:      keyID,
		Principals: principals,
		NotAfter:   notAfter,
		Serial:     serial,
		Extensions: g.SSHExtensions,
	})
	if err != nil {
		return nil, err
	}
	tlsCert, err := sc.cas.SignTLSClient(TLSClientRequest{PublicKey: keys.tls, Name: sc.subjectName(), Organization: sc.organization(),
		SPIFFEID: &url.URL{Scheme: "spiffe", Host: sc.cluster, Path: sc.defaultSPIFFEPath()}, Roles: g.Roles, NotAfter: notAfter, Extensions: extensions})
	if err != nil {
		return nil, err
	}
	return &identity.OutputResponse{
		Name:           sc.out.Name,
		Type:           sc.out.Type,
		Roles:          g.Roles,
		Logins:         nonNil(g.Logins),
		SSHCertificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshCert))),
		TLSCertificate: tlsCert.PEM(),
		SSHSerial:      serial,
		TLSSerial:      serialString(tlsCert.Serial),
		NotBefore:      tlsCert.NotBefore,
		NotAfter:       notAfter,
	}, nil
}

// noLoginPrincipal starts the one principal of a certificate that grants no
// login: a leading '-' is not a valid user name, so it matches no account.
const noLoginPrincipal = "-mbot-nologin-"

// checkPrincipals checks the logins about to be signed into an SSH user
// certificate, the last check before the signature: whatever path they came
// by, each must be a user name.
func checkPrincipals(logins []string) error {
	for _, l := range logins {
		if err := identity.CheckLogin("login", l); err != nil {
			return identity.Errorf(identity.CodeRoleDenied, "refusing to sign: %v", err)
		}
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
