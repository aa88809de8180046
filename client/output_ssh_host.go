package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// OutputTypeSSHHost writes an SSH host key and certificate, and the user
// CA, for the sshd of a machine the job brings up.
const OutputTypeSSHHost = "ssh_host"

// Files of an ssh_host output, named as tbot's ssh_host output names them.
const (
	// FileSSHHostKey is the host private key (sshd's HostKey).
	FileSSHHostKey    = "ssh_host"
	FileSSHHostPubKey = "ssh_host.pub"
	// FileSSHHostCert is the host certificate (sshd's HostCertificate).
	FileSSHHostCert = "ssh_host-cert.pub"
	// FileSSHHostUserCA is the SSH user CA (sshd's TrustedUserCAKeys).
	FileSSHHostUserCA = "ssh_host-user-ca.pub"
	// FileSSHHostRevokedKeys is the OpenSSH KRL of the user CA's locked
	// certificates (sshd's RevokedKeys), always written, possibly empty.
	FileSSHHostRevokedKeys = "revoked_keys"
	// FileSSHDConfigSnippet holds the HostKey, HostCertificate,
	// TrustedUserCAKeys and RevokedKeys lines, for sshd_config's Include.
	FileSSHDConfigSnippet = "sshd_config.snippet"
	FileSSHHostJSON       = "ssh_host.json"
)

func init() {
	outputKinds[OutputTypeSSHHost] = sshHostOutput{}
	identity.RegisterFiles(FileSSHHostKey, FileSSHHostPubKey, FileSSHHostCert, FileSSHHostUserCA, FileSSHHostRevokedKeys, FileSSHDConfigSnippet, FileSSHHostJSON)
}

// SSHHostOutput is what an ssh_host output asks for in mbot.yaml:
//
//   - type: ssh_host
//     destination: /etc/ssh/mbot
//     host_names: [web1.ci.acme.internal]  # each matching a role's host_names
type SSHHostOutput struct {
	HostNames []string `yaml:"host_names"`
}

// CheckAndSetDefaults checks an ssh_host output's names; the authority
// checks them again, and whether the bot's roles grant them.
func (h *SSHHostOutput) CheckAndSetDefaults() error {
	switch {
	case len(h.HostNames) == 0:
		return badField("host_names", "is required: the names others reach this host by (each granted by a role's host_names)")
	case len(h.HostNames) > identity.MaxHostNames:
		return badField("host_names", "lists %d names; at most %d", len(h.HostNames), identity.MaxHostNames)
	}
	for _, n := range h.HostNames {
		if err := identity.CheckHostName("host name", n); err != nil {
			return badField("host_names", "%v", err)
		}
	}
	return nil
}

type sshHostOutput struct{}

func (sshHostOutput) keys() (sshKey, tlsKey bool) { return true, false }

func (sshHostOutput) setFields(o *Output) []string {
	if len(o.HostNames) > 0 {
		return []string{"host_names"}
	}
	return nil
}

func (sshHostOutput) checkAndSetDefaults(o *Output) error {
	return o.SSHHostOutput.CheckAndSetDefaults()
}

func (sshHostOutput) request(o *Output, req *identity.OutputRequest) {
	req.SSHHost = &identity.SSHHostRequest{HostNames: o.HostNames}
}

// SSHHostSummary is ssh_host.json: what an ssh_host output holds.
type SSHHostSummary struct {
	Cluster   string    `json:"cluster"`
	Bot       string    `json:"bot"`
	Output    string    `json:"output"`
	Type      string    `json:"type"`
	HostNames []string  `json:"host_names"`
	Roles     []string  `json:"roles"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Serial    uint64    `json:"serial"`
	// Files names each file written, by purpose.
	Files map[string]string `json:"files"`
}

func (sshHostOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	g := grant.SSHHost
	if g == nil {
		return nil, errors.New("the authority's answer holds no ssh_host grant")
	}
	if err := checkHostCertificate(grant.SSHCertificate, keys, g.HostNames); err != nil {
		return nil, err
	}
	userCA, err := checkAuthorizedKeys("SSH user CA", g.UserCA)
	if err != nil {
		return nil, err
	}
	// sshd_config reads a quoted value up to the next '"'; a backslash
	// may escape, depending on the version.
	if strings.ContainsFunc(dir, func(r rune) bool { return r < ' ' || r == 0x7f || r == '"' || r == '\\' }) || strings.TrimSpace(dir) != dir {
		return nil, fmt.Errorf("the destination %s has a control character, '\"', '\\' or surrounding space, which sshd_config cannot hold", identity.Quote(dir))
	}
	// sshd refuses every login if RevokedKeys names a file it cannot read,
	// so the file is always written: empty (no key revoked) if the
	// authority sent no list.
	if len(g.RevokedKeys) > 0 && !bytes.HasPrefix(g.RevokedKeys, []byte("SSHKRL\n\x00")) {
		return nil, errors.New("the authority's revoked keys are not an OpenSSH KRL")
	}
	keyPEM, err := keys.SSHPrivateKeyPEM(g.HostNames[0])
	if err != nil {
		return nil, err
	}
	path := func(name string) string { return `"` + filepath.Join(dir, name) + `"` }
	var snippet bytes.Buffer
	fmt.Fprintf(&snippet, "# mbot ssh_host output %s: bot %s, host names %s; valid until %s\n",
		identity.Quote(grant.Name), identity.Quote(resp.Bot), strings.Join(g.HostNames, ","), grant.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(&snippet, "# use: Include %s near the top of sshd_config (before any Match), then start or reload sshd.\n", path(FileSSHDConfigSnippet))
	snippet.WriteString("# sshd reads the key, certificate and user CA only when it starts or gets SIGHUP: after mbot start renews them, reload sshd.\n")
	snippet.WriteString("# It reads revoked_keys (the KRL of locked certificates) at every connection: no reload needed for it.\n")
	fmt.Fprintf(&snippet, "HostKey %s\nHostCertificate %s\nTrustedUserCAKeys %s\nRevokedKeys %s\n", path(FileSSHHostKey), path(FileSSHHostCert), path(FileSSHHostUserCA), path(FileSSHHostRevokedKeys))

	sum := SSHHostSummary{Cluster: resp.ClusterName, Bot: resp.Bot, Output: grant.Name, Type: OutputTypeSSHHost, HostNames: g.HostNames,
		Roles: grant.Roles, NotBefore: grant.NotBefore, NotAfter: grant.NotAfter, Serial: grant.SSHSerial,
		Files: map[string]string{"key": FileSSHHostKey, "public_key": FileSSHHostPubKey, "certificate": FileSSHHostCert,
			"user_ca": FileSSHHostUserCA, "revoked_keys": FileSSHHostRevokedKeys, "sshd_config": FileSSHDConfigSnippet}}
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return []identity.File{
		{Name: FileSSHHostKey, Data: keyPEM, Mode: 0o600},
		{Name: FileSSHHostPubKey, Data: []byte(keys.SSHPublicKey()), Mode: 0o644},
		{Name: FileSSHHostCert, Data: []byte(grant.SSHCertificate + "\n"), Mode: 0o644},
		{Name: FileSSHHostUserCA, Data: []byte(userCA), Mode: 0o644},
		{Name: FileSSHHostRevokedKeys, Data: bytes.Clone(g.RevokedKeys), Mode: 0o644},
		{Name: FileSSHDConfigSnippet, Data: snippet.Bytes(), Mode: 0o644},
		{Name: FileSSHHostJSON, Data: append(sumJSON, '\n'), Mode: 0o644},
	}, nil
}

// checkHostCertificate checks that the authority's answer is one host
// certificate on the output's key for exactly names, none a wildcard.
func checkHostCertificate(line string, keys *identity.Keys, names []string) error {
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	cert, ok := pub.(*ssh.Certificate)
	if err != nil || !ok || len(bytes.TrimSpace(rest)) > 0 || strings.ContainsAny(line, "\r\n") {
		return errors.New("the authority's answer holds no SSH certificate")
	}
	if cert.CertType != ssh.HostCert {
		return errors.New("the authority's SSH certificate is not a host certificate")
	}
	want, err := ssh.NewPublicKey(keys.SSH.Public())
	if err != nil || !bytes.Equal(cert.Key.Marshal(), want.Marshal()) {
		return errors.New("the authority's host certificate is not for the key this output asked for")
	}
	if len(names) == 0 || !slices.Equal(cert.ValidPrincipals, names) {
		return fmt.Errorf("the authority's host certificate names %s, its answer %s", identity.Quote(identity.Truncate(strings.Join(cert.ValidPrincipals, ","), 200)),
			identity.Quote(identity.Truncate(strings.Join(names, ","), 200)))
	}
	for _, n := range names {
		if err := identity.CheckHostName("host name", n); err != nil {
			return fmt.Errorf("the authority's host certificate: %w", err)
		}
	}
	return nil
}

// checkAuthorizedKeys checks that s is one or more public keys, one per
// line, and returns them as OpenSSH writes them.
func checkAuthorizedKeys(what, s string) (string, error) {
	var out strings.Builder
	for line := range strings.Lines(s) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		pub, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil || len(options) > 0 || len(bytes.TrimSpace(rest)) > 0 {
			return "", fmt.Errorf("the authority's %s is not a public key", what)
		}
		if _, isCert := pub.(*ssh.Certificate); isCert {
			return "", fmt.Errorf("the authority's %s is a certificate, not a CA key", what)
		}
		out.Write(ssh.MarshalAuthorizedKey(pub))
	}
	if out.Len() == 0 {
		return "", fmt.Errorf("the authority's answer holds no %s", what)
	}
	return out.String(), nil
}

// config is the type's own mbot.yaml fields.
func (sshHostOutput) config() any { return SSHHostOutput{} }
