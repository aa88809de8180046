package identity

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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
	knownHosts, err := KnownHosts(resp.HostPatterns, resp.SSHHostCA)
	if err != nil {
		return nil, err
	}
	sshConfig, err := SSHConfig(dir, resp.HostPatterns, out.Logins, subject, out.NotAfter)
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
		{FileKnownHosts, []byte(knownHosts), 0o644},
		{FileSSHConfig, []byte(sshConfig), 0o644},
		{FileIdentityJSON, append(sumJSON, '\n'), 0o600},
	}, nil
}

// KnownHosts trusts the SSH host CA for each host pattern. The values come
// from the authority's answer; each is checked, as the authority checks
// them, so that none can add a line to the file.
func KnownHosts(patterns []string, hostCA string) (string, error) {
	// One line per CA: two while the authority rotates its SSH host CA.
	var cas []string
	for line := range strings.Lines(hostCA) {
		if line = strings.TrimSpace(line); line != "" {
			cas = append(cas, line)
		}
	}
	if len(cas) == 0 || slices.ContainsFunc(cas, func(l string) bool { return !isAuthorizedKeyLine(l) }) {
		return "", fmt.Errorf("the authority's SSH host CA %s is not one authorized_keys line per CA", Quote(Truncate(hostCA, 64)))
	}
	var b strings.Builder
	for _, p := range patterns {
		if err := CheckHostPattern("host pattern", p); err != nil {
			return "", err
		}
		for _, ca := range cas {
			fmt.Fprintf(&b, "@cert-authority %s %s\n", p, ca)
		}
	}
	return b.String(), nil
}

// isAuthorizedKeyLine reports whether line is "<key type> <base64> [comment]"
// without options or a marker, so that it cannot say more than one CA key
// in known_hosts.
func isAuthorizedKeyLine(line string) bool {
	fields := strings.Fields(line)
	if len(fields) < 2 || strings.IndexFunc(line, unicode.IsControl) >= 0 || strings.HasPrefix(fields[0], "@") {
		return false
	}
	typeOK := strings.IndexFunc(fields[0], func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '@' || r == '.')
	}) < 0
	keyOK := strings.IndexFunc(fields[1], func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=')
	}) < 0
	return typeOK && keyOK
}

// SSHConfig writes one Host block per host pattern that makes plain `ssh -F`
// use this identity and trust only hosts certified by the authority.
// subject says whose identity it is, as `bot "deployer"`. Host patterns and
// logins are checked against their character sets, which need no quoting;
// paths are quoted as OpenSSH splits and expands them.
func SSHConfig(dir string, patterns, logins []string, subject string, notAfter time.Time) (string, error) {
	for _, l := range logins {
		if err := CheckLogin("login", l); err != nil {
			return "", err
		}
	}
	if strings.IndexFunc(subject, unicode.IsControl) >= 0 {
		return "", fmt.Errorf("identity subject %s contains a control character", Quote(subject))
	}
	key, err := sshConfigPath(filepath.Join(dir, FileSSHKey))
	if err != nil {
		return "", err
	}
	cert, _ := sshConfigPath(filepath.Join(dir, FileSSHCert))
	knownHosts, _ := sshConfigPath(filepath.Join(dir, FileKnownHosts))
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mbot for %s; the certificate expires %s.\n", subject, notAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Use: ssh -F %s <host>\n", filepath.Join(dir, FileSSHConfig))
	for _, p := range patterns {
		if err := CheckHostPattern("host pattern", p); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\nHost %s\n", p)
		if len(logins) > 0 {
			fmt.Fprintf(&b, "    User %s\n", logins[0])
		}
		fmt.Fprintf(&b, "    IdentityFile %s\n", key)
		fmt.Fprintf(&b, "    CertificateFile %s\n", cert)
		fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", knownHosts)
		b.WriteString("    GlobalKnownHostsFile /dev/null\n")
		b.WriteString("    IdentitiesOnly yes\n")
		b.WriteString("    StrictHostKeyChecking yes\n")
		b.WriteString("    PasswordAuthentication no\n")
	}
	return b.String(), nil
}

// sshConfigPath quotes a path for ssh_config: in double quotes, with '"' and
// '\' escaped by a backslash (OpenSSH's argument splitting) and '%' doubled
// (IdentityFile, CertificateFile and UserKnownHostsFile expand %-tokens). A
// control character cannot be written on a config line at all.
func sshConfigPath(p string) (string, error) {
	if strings.IndexFunc(p, unicode.IsControl) >= 0 || !utf8.ValidString(p) {
		return "", fmt.Errorf("the identity directory %s contains a control character or invalid UTF-8, which ssh_config cannot hold; choose another --out", Quote(p))
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%")
	return `"` + r.Replace(p) + `"`, nil
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// summaryFiles are the files that say what an output directory holds
// (identity.json, database.json, ...): a directory holding one is mbot's
// output, which RemoveStale may remove.
var summaryFiles = []string{FileIdentityJSON}

// RegisterSummaryFile registers name as an output type's summary file (and
// as a file mbot writes). It is called from init functions only.
func RegisterSummaryFile(name string) {
	RegisterFiles(name)
	if !slices.Contains(summaryFiles, name) {
		summaryFiles = append(summaryFiles, name)
	}
}

// RegisterFiles adds names to the files mbot may write into an output
// directory: each output type's writer registers the names it writes, so
// that a directory holding them is mbot's to replace and a stale one's to
// remove. It is called from init functions only.
func RegisterFiles(names ...string) {
	for _, n := range names {
		if !slices.Contains(identityFiles, n) {
			identityFiles = append(identityFiles, n)
		}
	}
}
