package identity

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"
)

// Names of the files of an identity directory (SPEC §4).
const (
	FileSSHKey       = "key"
	FileSSHPublicKey = "key.pub"
	FileSSHCert      = "key-cert.pub"
	FileTLSKey       = "tls.key"
	FileTLSCert      = "tls.crt"
	FileCA           = "ca.crt"
	FileKnownHosts   = "known_hosts"
	FileSSHConfig    = "ssh_config"
	FileIdentityJSON = "identity.json"
)

// identityFiles lists every file mbot may write into an identity directory,
// so that a stale identity can be removed without touching anything else.
// admin.json is the admin identity's (see authority.ensureAdminIdentity).
var identityFiles = []string{FileSSHKey, FileSSHPublicKey, FileSSHCert, FileTLSKey,
	FileTLSCert, FileCA, FileKnownHosts, FileSSHConfig, FileIdentityJSON, "admin.json"}

// File is one file to write: secrets get mode 0600, public material 0644.
type File struct {
	Name string
	Data []byte
	Mode fs.FileMode
}

// Summary is the content of identity.json: what this identity is and when it expires.
type Summary struct {
	Cluster   string    `json:"cluster"`
	Bot       string    `json:"bot"`
	JoinToken string    `json:"join_token"`
	Method    string    `json:"method"`
	Output    string    `json:"output"`
	Roles     []string  `json:"roles"`
	Logins    []string  `json:"logins"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Serials   struct {
		SSH uint64 `json:"ssh"`
		TLS string `json:"tls"`
	} `json:"serials"`
}

// RenderIdentity lays out the default identity output of SPEC §4 for dir,
// which must be the absolute path the files will finally live at (ssh_config
// refers to the other files by it).
func RenderIdentity(dir string, keys *Keys, resp *JoinResponse, out *OutputResponse) ([]File, error) {
	return RenderIdentityOf(fmt.Sprintf("bot %q", resp.Bot), dir, keys, resp, out)
}

// RenderIdentityOf is RenderIdentity for an identity described by subject
// (`bot "deployer"`, `user "alice"`) in the files' headers.
func RenderIdentityOf(subject, dir string, keys *Keys, resp *JoinResponse, out *OutputResponse) ([]File, error) {
	sshKey, err := keys.SSHPrivateKeyPEM(resp.Bot)
	if err != nil {
		return nil, fmt.Errorf("encoding SSH key: %w", err)
	}
	tlsKey, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, fmt.Errorf("encoding TLS key: %w", err)
	}
	sum := Summary{Cluster: resp.ClusterName, Bot: resp.Bot, JoinToken: resp.JoinToken, Method: resp.Method,
		Output: out.Name, Roles: out.Roles, Logins: out.Logins, NotBefore: out.NotBefore, NotAfter: out.NotAfter}
	sum.Serials.SSH, sum.Serials.TLS = out.SSHSerial, out.TLSSerial
	sumJSON, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	return []File{
		{FileSSHKey, sshKey, 0o600},
		{FileSSHPublicKey, []byte(keys.SSHPublicKey()), 0o644},
		{FileSSHCert, []byte(ensureNewline(out.SSHCertificate)), 0o644},
		{FileTLSKey, tlsKey, 0o600},
		{FileTLSCert, []byte(out.TLSCertificate), 0o644},
		{FileCA, []byte(resp.TLSCA), 0o644},
		{FileKnownHosts, []byte(KnownHosts(resp.HostPatterns, resp.SSHHostCA)), 0o644},
		{FileSSHConfig, []byte(SSHConfig(dir, resp.HostPatterns, out.Logins, subject, out.NotAfter)), 0o644},
		{FileIdentityJSON, append(sumJSON, '\n'), 0o600},
	}, nil
}

// KnownHosts trusts the SSH host CA for each host pattern.
func KnownHosts(patterns []string, hostCA string) string {
	var b strings.Builder
	for _, p := range patterns {
		fmt.Fprintf(&b, "@cert-authority %s %s\n", p, strings.TrimSpace(hostCA))
	}
	return b.String()
}

// SSHConfig writes one Host block per host pattern that makes plain `ssh -F`
// use this identity and trust only hosts certified by the authority.
// subject says whose identity it is, as `bot "deployer"`.
func SSHConfig(dir string, patterns, logins []string, subject string, notAfter time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mbot for %s; the certificate expires %s.\n", subject, notAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Use: ssh -F %s <host>\n", filepath.Join(dir, FileSSHConfig))
	for _, p := range patterns {
		fmt.Fprintf(&b, "\nHost %s\n", p)
		if len(logins) > 0 {
			fmt.Fprintf(&b, "    User %s\n", logins[0])
		}
		fmt.Fprintf(&b, "    IdentityFile \"%s\"\n", filepath.Join(dir, FileSSHKey))
		fmt.Fprintf(&b, "    CertificateFile \"%s\"\n", filepath.Join(dir, FileSSHCert))
		fmt.Fprintf(&b, "    UserKnownHostsFile \"%s\"\n", filepath.Join(dir, FileKnownHosts))
		b.WriteString("    GlobalKnownHostsFile /dev/null\n")
		b.WriteString("    IdentitiesOnly yes\n")
		b.WriteString("    StrictHostKeyChecking yes\n")
		b.WriteString("    PasswordAuthentication no\n")
	}
	return b.String()
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}
