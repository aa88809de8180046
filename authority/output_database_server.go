package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// databaseServerOutput is the database_server output type, the mirror of
// ssh_host for PostgreSQL and MariaDB: a server certificate on the output's
// key for the names asked (database-server CA, which database outputs of
// resources with ca_issued_by_authority check servers by), the
// database-client CA the server checks clients by, and that CA's CRL
// (added by grant, which reads the store). Granted by the role field
// db_server_names: each DNS name must match one of its patterns, each IP
// address equal one. It replaces re-running mbot sign --format on the
// database host: mbot start keeps it fresh, revocations included.
type databaseServerOutput struct{}

func init() { outputKinds[identity.OutputDatabaseServer] = databaseServerOutput{} }

func (databaseServerOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (databaseServerOutput) signers() (sshCA, tlsCA string) { return "", "database-server-ca" }

func (databaseServerOutput) checkRequest(out *identity.OutputRequest) error {
	r := out.DatabaseServer
	if r == nil || len(r.ServerNames) == 0 {
		return identity.Errorf(identity.CodeBadRequest, "output %q of type database_server names no server; set server_names: to the DNS names and IP addresses clients dial", out.Name)
	}
	if len(r.ServerNames) > identity.MaxHostNames {
		return identity.Errorf(identity.CodeBadRequest, "output %q asks for %d server names; at most %d", out.Name, len(r.ServerNames), identity.MaxHostNames)
	}
	for _, n := range r.ServerNames {
		if err := identity.CheckServerName("server name", n); err != nil {
			return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
		}
	}
	return nil
}

func (databaseServerOutput) audit(resp *identity.OutputResponse) string {
	return resp.Name + " type=database_server" + auditList("server_names", resp.DatabaseServer.ServerNames)
}

func (databaseServerOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	var names []string
	for _, n := range sc.out.DatabaseServer.ServerNames {
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		} else {
			n = strings.ToLower(n)
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	patterns := sc.grant.Granted(resources.FieldDBServerNames)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: names[0]},
		NotAfter:    sc.notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		// Checked again before signing, whatever path the names came by.
		if err := identity.CheckServerName("server name", n); err != nil {
			return nil, identity.Errorf(identity.CodeBadRequest, "output %q: %v", sc.out.Name, err)
		}
		if !slices.ContainsFunc(patterns, func(p string) bool { return identity.MatchServerName(p, n) }) {
			return nil, notGranted(sc, resources.FieldDBServerNames, "database server name", n)
		}
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	cert, err := sc.cas.DatabaseServer.Sign(tmpl, sc.keys.tls)
	if err != nil {
		return nil, err
	}
	resp := sc.x509Response(identity.OutputDatabaseServer, cert)
	resp.DatabaseServer = &identity.DatabaseServerGrant{ServerNames: names, ClientCA: string(sc.cas.DatabaseClient.CertPEM)}
	return resp, nil
}
