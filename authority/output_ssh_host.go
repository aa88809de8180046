package authority

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// sshHostOutput is the ssh_host output type: an SSH host certificate on
// the output's key for the names asked (ssh-host CA), for a machine the
// job brings up that others SSH into, and the SSH user CA its sshd
// trusts. Granted by the role field host_names: each name must match one
// of its patterns ("*.ci.acme.internal" grants one label in place of
// '*'). No name is special: a role granting "*.acme.internal" grants the
// authority's own host names too, and those of hosts signed with mbot
// sign --host; grant narrow patterns.
type sshHostOutput struct{}

func init() {
	outputKinds[identity.OutputSSHHost] = sshHostOutput{}
}

func (sshHostOutput) keys() (sshKey, tlsKey bool) { return true, false }

func (sshHostOutput) signers() (sshCA, tlsCA string) { return "ssh-host-ca", "" }

func (sshHostOutput) checkRequest(out *identity.OutputRequest) error {
	r := out.SSHHost
	if r == nil || len(r.HostNames) == 0 {
		return identity.Errorf(identity.CodeBadRequest, "output %q of type ssh_host names no host; set host_names: (or --host-names) to the names others reach the host by", out.Name)
	}
	if len(r.HostNames) > identity.MaxHostNames {
		return identity.Errorf(identity.CodeBadRequest, "output %q asks for %d host names; at most %d", out.Name, len(r.HostNames), identity.MaxHostNames)
	}
	for _, n := range r.HostNames {
		if err := identity.CheckHostName("host name", n); err != nil {
			return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
		}
	}
	return nil
}

func (sshHostOutput) audit(resp *identity.OutputResponse) string {
	return resp.Name + " type=ssh_host" + auditList("host_names", resp.SSHHost.HostNames)
}

func (sshHostOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	// ssh lower-cases the name it connects to before it checks the
	// certificate's principals, so they are signed lower-case.
	var names []string
	for _, n := range sc.out.SSHHost.HostNames {
		if n = strings.ToLower(n); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	patterns := sc.grant.Granted(resources.FieldHostNames)
	for _, n := range names {
		// Checked again before signing, whatever path the names came by.
		if err := identity.CheckHostName("host name", n); err != nil {
			return nil, identity.Errorf(identity.CodeBadRequest, "output %q: %v", sc.out.Name, err)
		}
		if !slices.ContainsFunc(patterns, func(p string) bool { return identity.MatchDNSPattern(p, n) }) {
			return nil, notGranted(sc, resources.FieldHostNames, "host name", n)
		}
	}
	serial := RandomSSHSerial()
	cert, err := sc.cas.SignSSHHost(SSHCertRequest{
		Key:        sc.keys.ssh,
		KeyID:      fmt.Sprintf("%s join_token=%s output=%s type=ssh_host serial=%d", sc.keyIDName(), sc.joinToken, sc.out.Name, serial),
		Principals: names,
		NotAfter:   sc.notAfter,
		Serial:     serial,
	})
	if err != nil {
		return nil, err
	}
	return &identity.OutputResponse{
		Name:           sc.out.Name,
		Type:           identity.OutputSSHHost,
		Roles:          sc.grant.Roles,
		Logins:         []string{},
		SSHCertificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))),
		SSHSerial:      serial,
		NotBefore:      time.Unix(int64(cert.ValidAfter), 0).UTC(),
		NotAfter:       sc.notAfter,
		SSHHost:        &identity.SSHHostGrant{HostNames: names, UserCA: strings.TrimSpace(sc.cas.SSHUserCAKeys())},
	}, nil
}
