package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// databaseOutput is the database output type: a client certificate for a
// database user (CN = the user, nothing else), signed by the
// database-client CA, with the server's address and the CA its
// certificate is checked by. Granted by role fields db_users and db_names.
type databaseOutput struct{}

func init() { outputKinds[identity.OutputDatabase] = databaseOutput{} }

func (databaseOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (databaseOutput) signers() (sshCA, tlsCA string) { return "", "database-client-ca" }

func (databaseOutput) checkRequest(out *identity.OutputRequest) error {
	r := out.Database
	if r == nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q of type database names no database; set database: and username:", out.Name)
	}
	if err := identity.CheckName("database", r.Database); err != nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
	}
	if err := identity.CheckLogin("username", r.Username); err != nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
	}
	if r.DBName != "" {
		if err := identity.CheckDBName("db_name", r.DBName); err != nil {
			return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
		}
	}
	return nil
}

func (databaseOutput) audit(resp *identity.OutputResponse) string {
	g := resp.Database
	s := fmt.Sprintf("%s type=database database=%s user=%s", resp.Name, g.Database, g.Username)
	if g.DBName != "" {
		s += " db_name=" + g.DBName
	}
	return s
}

func (databaseOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	r := sc.out.Database
	db, ok := sc.set.Databases[r.Database]
	if !ok {
		existing := "there are none; create one with mbot apply (kind: database)"
		if names := slices.Sorted(maps.Keys(sc.set.Databases)); len(names) > 0 {
			existing = "existing: " + strings.Join(names, ", ")
		}
		return nil, identity.Errorf(identity.CodeBadRequest, "output %q: there is no database named %q on this authority (%s)", sc.out.Name, r.Database, existing)
	}
	// Checked before signing, whatever path the values came by.
	if err := identity.CheckLogin("username", r.Username); err != nil {
		return nil, identity.Errorf(identity.CodeBadRequest, "output %q: %v", sc.out.Name, err)
	}
	if !slices.Contains(sc.grant.Granted(resources.FieldDBUsers), r.Username) {
		return nil, notGranted(sc, resources.FieldDBUsers, "database user", r.Username)
	}
	if r.DBName != "" && !slices.Contains(sc.grant.Granted(resources.FieldDBNames), r.DBName) {
		return nil, notGranted(sc, resources.FieldDBNames, "database name", r.DBName)
	}
	serverCA := db.Spec.CA + "\n"
	if db.Spec.CAIssuedByAuthority {
		serverCA = string(sc.cas.DatabaseServer.CertPEM)
	}
	host, port := db.Spec.HostPort()
	// The subject is the CN alone: MySQL and MariaDB match REQUIRE SUBJECT
	// against the whole of it, and PostgreSQL's cert method maps the CN to
	// the user. No SAN, no SPIFFE ID: nothing makes it pass as a bot.
	cert, err := sc.cas.DatabaseClient.Sign(&x509.Certificate{
		Subject:         pkix.Name{CommonName: r.Username},
		NotAfter:        sc.notAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: sc.provenance(),
	}, sc.keys.tls)
	if err != nil {
		return nil, err
	}
	resp := sc.x509Response(identity.OutputDatabase, cert)
	resp.Database = &identity.DatabaseGrant{
		Database: r.Database,
		Protocol: db.Spec.Protocol,
		Host:     host,
		Port:     port,
		Username: r.Username,
		DBName:   r.DBName,
		ServerCA: serverCA,
	}
	return resp, nil
}
