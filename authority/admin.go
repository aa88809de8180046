package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// Export types for mbot authority export.
var ExportTypes = []string{"ca-pin", "tls-ca", "ssh-user-ca", "ssh-host-ca"}

// OpenAdmin opens the store and CAs of an authority without serving or
// re-applying its resources: what local admin commands on the authority
// host need (like tctl). The CAs are created if this is the first use.
func OpenAdmin(ctx context.Context, cfg *Config) (*store.Store, *CAs, error) {
	st, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	cas, err := LoadCAs(ctx, st, cfg.ClusterName)
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
		return AuthorizedKey(c.SSHUser), nil
	case "ssh-host-ca":
		return AuthorizedKey(c.SSHHost), nil
	}
	return "", fmt.Errorf("--type %q is not one of %s", typ, strings.Join(ExportTypes, ", "))
}

// SignHost issues an SSH host key and certificate and a TLS server key and
// certificate for names, and records the signing in the audit log.
func SignHost(ctx context.Context, st *store.Store, cas *CAs, names []string, ttl time.Duration) ([]identity.File, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("--host needs at least one host name")
	}
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, " \t,*") {
			return nil, fmt.Errorf("--host %q is not a host name or address", n)
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
		Serials: []string{fmt.Sprintf("ssh:%d", serial), "tls:" + serialString(tlsCert.Serial)}, NotAfter: notAfter}
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
