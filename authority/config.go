package authority

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
	"github.com/mbot-dev/mbot/internal/suggest"
	"gopkg.in/yaml.v3"
)

// Config is authority.yaml (SPEC §3).
type Config struct {
	ClusterName string `yaml:"cluster_name"`
	// Audience is what joiners request their OIDC tokens for; default ClusterName.
	Audience  string        `yaml:"audience"`
	Listen    string        `yaml:"listen"`
	DataDir   string        `yaml:"data_dir"`
	Storage   StorageConfig `yaml:"storage"`
	Resources []string      `yaml:"resources"`
	SSH       SSHConfig     `yaml:"ssh"`
	// TLSNames are extra DNS names and IPs for the serving certificate, for
	// an authority reached by a name other than its listen address.
	TLSNames []string `yaml:"tls_names"`
	// IssuerURL is the OIDC issuer of JWT-SVIDs (their iss), as relying
	// parties reach the authority: https://host[:port]. Default: the first
	// tls_names entry (else the listen host) and the listen port.
	IssuerURL string `yaml:"issuer_url"`
	// MaxAdminTTL caps credentials signed deliberately with mbot sign --user
	// (default 8760h); bots never get more than 24h whatever it says.
	MaxAdminTTL Duration `yaml:"max_admin_ttl"`
	// AdminIdentityTTL is the lifetime of the admin identity each start
	// writes to <data_dir>/admin (default 24h, at most max_admin_ttl).
	AdminIdentityTTL Duration `yaml:"admin_identity_ttl"`
	// RequireSessionMFA and DeviceTrustMode are cluster-wide settings for
	// people. Bots cannot satisfy them: mbot lint reports every bot that
	// would be blocked, instead of letting it break at connect time.
	RequireSessionMFA bool   `yaml:"require_session_mfa"`
	DeviceTrustMode   string `yaml:"device_trust_mode"`
	// AuditRetention is how long audit records are kept (default 2160h, 90
	// days); older ones are deleted every ten minutes.
	AuditRetention Duration `yaml:"audit_retention"`
	// CAKeyEncryption seals CA private keys in the store with a key kept
	// outside it (ca_keys.go); $MBOT_CA_KEK may hold the key instead.
	CAKeyEncryption CAKeyEncryption `yaml:"ca_key_encryption"`

	// MetricsListen, if set, is host:port of a plain-HTTP listener serving
	// /metrics (Prometheus), /healthz and /readyz: for a private network
	// (docs/operations.md).
	MetricsListen string `yaml:"metrics_listen"`

	// path is the file the config was read from; relative paths are resolved against its directory.
	path string
}

// StorageConfig selects the store: sqlite (the default, in data_dir) or
// postgres, which several authority replicas share.
type StorageConfig struct {
	Type string `yaml:"type"`
	// DSN is the PostgreSQL connection string; default $MBOT_STORAGE_DSN.
	DSN string `yaml:"dsn"`
}

// StorageDSNEnv is the environment variable read when storage.dsn is empty.
const StorageDSNEnv = "MBOT_STORAGE_DSN"

// SSHConfig configures SSH outputs.
type SSHConfig struct {
	// HostPatterns are written into identities' known_hosts and ssh_config.
	HostPatterns []string `yaml:"host_patterns"`
}

// LoadConfig reads authority.yaml, refusing unknown fields and bad values
// with the file, line and field.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading authority config: %w", err)
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// ParseConfig reads an authority config from data; path names it in errors
// and anchors relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := make([]string, len(te.Errors))
			for i, e := range te.Errors {
				msgs[i] = path + ":" + strings.TrimPrefix(unknownConfigField.ReplaceAllStringFunc(e, unknownConfigFieldMessage), "line ")
			}
			return nil, errors.New(strings.Join(msgs, "\n"))
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc)
	var root *yaml.Node
	if len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	cfg.path = path
	if err := cfg.checkAndSetDefaults(root); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// yaml.v3's "field lisen not found in type authority.Config".
var unknownConfigField = lazyregexp.New(`field (\S+) not found in type authority\.(\w+)`)

// configSection is one of authority.yaml's mappings: where a field is,
// and the fields it has.
type configSection struct {
	where  string
	fields []string
}

// configSections are authority.yaml's mappings by Go type, built on first
// use (reflection a process that reads no authority.yaml does not pay for).
var configSections = sync.OnceValue(func() map[string]configSection {
	return map[string]configSection{
		"Config":          {"authority.yaml's top level", suggest.YAMLFields(Config{})},
		"StorageConfig":   {"storage", suggest.YAMLFields(StorageConfig{})},
		"SSHConfig":       {"ssh", suggest.YAMLFields(SSHConfig{})},
		"CAKeyEncryption": {"ca_key_encryption", suggest.YAMLFields(CAKeyEncryption{})},
	}
})

// unknownConfigFieldMessage says which field of authority.yaml is unknown,
// with the nearest known one and the fields of its section.
func unknownConfigFieldMessage(m string) string {
	sub := unknownConfigField.FindStringSubmatch(m)
	section, ok := configSections()[sub[2]]
	if !ok {
		return strings.ReplaceAll(m, "in type authority.", "in ")
	}
	msg := fmt.Sprintf("unknown field %q in %s", sub[1], section.where)
	if near := suggest.Nearest(sub[1], section.fields); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", near)
	}
	return msg + "; its fields: " + strings.Join(section.fields, ", ")
}

func (c *Config) checkAndSetDefaults(root *yaml.Node) error {
	fail := func(field, format string, args ...any) error {
		line := 1
		if n := resources.Lookup(root, strings.Split(field, ".")...); n != nil {
			line = n.Line
		}
		return fmt.Errorf("%s:%d: %s: %s", c.path, line, field, fmt.Sprintf(format, args...))
	}
	if c.ClusterName == "" {
		return fail("cluster_name", "is required (it names the CAs and is the default OIDC audience)")
	}
	if err := identity.CheckName("cluster name", c.ClusterName); err != nil {
		return fail("cluster_name", "%v; it becomes the SPIFFE trust domain and the default host pattern", err)
	}
	if c.Audience == "" {
		c.Audience = c.ClusterName
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fail("listen", "%q is not host:port (%v)", c.Listen, err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fail("metrics_listen", "%q is not host:port (%v); for example 127.0.0.1:9090", c.MetricsListen, err)
		}
		if c.MetricsListen == c.Listen {
			return fail("metrics_listen", "%s is the listen address; metrics need a port of their own", c.MetricsListen)
		}
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/mbot"
	}
	c.DataDir = c.resolve(c.DataDir)
	switch c.Storage.Type {
	case "", "sqlite":
		c.Storage.Type = "sqlite"
	case "postgres":
		// The DSN may carry a password: the environment keeps it out of the file.
		if c.Storage.DSN == "" {
			c.Storage.DSN = os.Getenv(StorageDSNEnv)
		}
		if c.Storage.DSN == "" {
			return fail("storage", "dsn is required for postgres storage (or set %s): postgres://user@host/db?sslmode=verify-full", StorageDSNEnv)
		}
		if err := store.CheckPostgresDSN(c.Storage.DSN); err != nil {
			return fail("storage.dsn", "%v", err)
		}
	default:
		return fail("storage.type", "%q is not one of sqlite, postgres", c.Storage.Type)
	}
	for i, r := range c.Resources {
		c.Resources[i] = c.resolve(r)
	}
	if resources.Lookup(root, "ca_key_encryption") != nil && c.CAKeyEncryption.KeyFile == "" {
		return fail("ca_key_encryption", "key_file is required: the file holding the 32-byte key that seals the CA keys (make one with: "+GenKEKCommand+")")
	}
	if c.CAKeyEncryption.KeyFile != "" {
		c.CAKeyEncryption.KeyFile = c.resolve(c.CAKeyEncryption.KeyFile)
	}
	if c.AuditRetention == 0 {
		c.AuditRetention = Duration(2160 * time.Hour)
	}
	if time.Duration(c.AuditRetention) < time.Hour {
		return fail("audit_retention", "%s is too short to investigate anything; keep at least 1h", time.Duration(c.AuditRetention))
	}
	if c.MaxAdminTTL == 0 {
		c.MaxAdminTTL = Duration(8760 * time.Hour)
	}
	if c.AdminIdentityTTL == 0 {
		c.AdminIdentityTTL = Duration(min(24*time.Hour, time.Duration(c.MaxAdminTTL)))
	}
	switch ttl := time.Duration(c.AdminIdentityTTL); {
	case ttl < 10*time.Minute:
		return fail("admin_identity_ttl", "%s is too short to use; give the admin identity at least 10m (default 24h)", ttl)
	case ttl > time.Duration(c.MaxAdminTTL):
		return fail("admin_identity_ttl", "%s is above max_admin_ttl (%s); lower it, or raise max_admin_ttl", ttl, time.Duration(c.MaxAdminTTL))
	}
	switch c.DeviceTrustMode {
	case "", "off", "optional", "required-for-humans", "required":
	default:
		return fail("device_trust_mode", "%q is not one of off, optional, required-for-humans, required", c.DeviceTrustMode)
	}
	if len(c.SSH.HostPatterns) == 0 {
		c.SSH.HostPatterns = []string{"*." + c.ClusterName}
	}
	for i, p := range c.SSH.HostPatterns {
		// Written into every identity's known_hosts and ssh_config.
		if err := identity.CheckHostPattern(fmt.Sprintf("ssh.host_patterns[%d]", i), p); err != nil {
			return fail("ssh.host_patterns", "%v; write one pattern per list item", err)
		}
	}
	for i, n := range c.TLSNames {
		if err := CheckHostName(fmt.Sprintf("tls_names[%d]", i), n); err != nil {
			return fail("tls_names", "%v", err)
		}
	}
	if c.IssuerURL != "" {
		iss, err := checkIssuerURL(c.IssuerURL)
		if err != nil {
			return fail("issuer_url", "%v", err)
		}
		c.IssuerURL = iss
	}
	return nil
}

// Duration is a time.Duration written as "720h" in YAML.
type Duration = resources.Duration

func (c *Config) resolve(p string) string {
	if filepath.IsAbs(p) || c.path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// CheckHostName checks a host name or IP address that a certificate is
// issued for (mbot sign --host, tls_names): an IP address, or DNS labels of
// letters, digits, '-' and '_' separated by dots, at most 253 characters.
// Wildcards are refused: one host key per host, so that a compromised host
// cannot pass for its neighbours.
func CheckHostName(what, name string) error {
	if net.ParseIP(name) != nil {
		return nil
	}
	ok := name != "" && len(name) <= 253
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		ok = ok && label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for i := 0; ok && i < len(label); i++ {
			c := label[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		}
	}
	if !ok {
		return fmt.Errorf("%s %s is not a host name or IP address: use DNS labels of letters, digits, '-' and '_' separated by dots (no wildcards), or an IP address",
			what, identity.Quote(identity.Truncate(name, 64)))
	}
	return nil
}
