package authority_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
)

func TestParseConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authority.yaml")
	cfg, err := authority.ParseConfig(path, []byte("cluster_name: acme\nresources: [bots.yaml, /etc/mbot/extra.yaml]\n"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"audience", cfg.Audience, "acme"},
		{"listen", cfg.Listen, "127.0.0.1:8443"},
		{"data_dir", cfg.DataDir, "/var/lib/mbot"},
		{"storage.type", cfg.Storage.Type, "sqlite"},
		{"ssh.host_patterns", cfg.SSH.HostPatterns, []string{"*.acme"}},
		{"admin_identity_ttl", cfg.AdminIdentityTTL.String(), "24h0m0s"},
		{"resources", cfg.Resources, []string{filepath.Join(dir, "bots.yaml"), "/etc/mbot/extra.yaml"}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
}

func TestParseConfigExplicit(t *testing.T) {
	dir := t.TempDir()
	data := `cluster_name: acme
audience: https://auth.acme.internal
listen: 0.0.0.0:9443
data_dir: state
storage: {type: sqlite}
ssh:
  host_patterns: ["*.acme.internal", "10.0.0.*"]
tls_names: [auth.acme.internal]
`
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audience != "https://auth.acme.internal" || cfg.Listen != "0.0.0.0:9443" {
		t.Errorf("audience/listen = %q/%q", cfg.Audience, cfg.Listen)
	}
	if want := filepath.Join(dir, "state"); cfg.DataDir != want {
		t.Errorf("data_dir %q, want %q (relative to the config file)", cfg.DataDir, want)
	}
	if want := []string{"*.acme.internal", "10.0.0.*"}; !reflect.DeepEqual(cfg.SSH.HostPatterns, want) {
		t.Errorf("host_patterns %v, want %v", cfg.SSH.HostPatterns, want)
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Setenv(authority.StorageDSNEnv, "")
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", "cluster_name: acme\nlisten_addr: 127.0.0.1:8443\n", []string{"authority.yaml:2:", `unknown field "listen_addr" in authority.yaml's top level; its fields: cluster_name, audience, listen,`}},
		{"mistyped field", "cluster_name: acme\nlisen: 127.0.0.1:8443\n", []string{"authority.yaml:2:", `unknown field "lisen" in authority.yaml's top level (did you mean listen?)`}},
		{"unknown nested field", "cluster_name: acme\nssh:\n  host_pattern: ['*.acme']\n", []string{"authority.yaml:3:", `unknown field "host_pattern" in ssh (did you mean host_patterns?); its fields: host_patterns`}},
		{"unknown storage field", "cluster_name: acme\nstorage:\n  type: sqlite\n  path: /tmp/x\n", []string{"authority.yaml:4:", `unknown field "path" in storage; its fields: type, dsn`}},
		{"wrong type", "cluster_name: acme\nresources: bots.yaml\n", []string{"authority.yaml:2:"}},
		{"no cluster name", "listen: 127.0.0.1:8443\n", []string{"authority.yaml:1:", "cluster_name", "is required"}},
		{"empty file", "", []string{"cluster_name", "is required"}},
		{"cluster name with a slash", "listen: 127.0.0.1:8443\ncluster_name: acme/prod\n", []string{"authority.yaml:2:", "cluster_name", "SPIFFE"}},
		{"listen without port", "cluster_name: acme\nlisten: localhost\n", []string{"authority.yaml:2:", "listen", "host:port"}},
		{"unknown storage", "cluster_name: acme\nstorage:\n  type: mysql\n", []string{"authority.yaml:3:", "storage.type", `"mysql"`}},
		{"postgres without dsn", "cluster_name: acme\nstorage: {type: postgres}\n", []string{"authority.yaml:2:", "dsn is required", "MBOT_STORAGE_DSN"}},
		{"postgres dsn unparsable", "cluster_name: acme\nstorage:\n  type: postgres\n  dsn: 'postgres://mbot:s3cret@db:99999999/mbot'\n", []string{"authority.yaml:4:", "storage.dsn", "not a PostgreSQL connection string"}},
		{"admin identity above max_admin_ttl", "cluster_name: acme\nmax_admin_ttl: 12h\nadmin_identity_ttl: 24h\n", []string{"authority.yaml:3:", "admin_identity_ttl", "above max_admin_ttl (12h0m0s)"}},
		{"admin identity too short", "cluster_name: acme\nadmin_identity_ttl: 1m\n", []string{"authority.yaml:2:", "admin_identity_ttl", "at least 10m"}},
		{"host pattern with a space", "cluster_name: acme\nssh:\n  host_patterns: ['a b']\n", []string{"authority.yaml:3:", "ssh.host_patterns"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authority.ParseConfig("authority.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted; want an error mentioning %q", tc.want)
			}
			for _, f := range tc.want {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not mention %q", err, f)
				}
			}
		})
	}
}

// TestStorageDSNFromEnvironment: a postgres storage section without a dsn
// takes MBOT_STORAGE_DSN, so that the password stays out of the file.
func TestStorageDSNFromEnvironment(t *testing.T) {
	const dsn = "postgres://mbot@db.internal/mbot?sslmode=verify-full"
	t.Setenv(authority.StorageDSNEnv, dsn)
	cfg, err := authority.ParseConfig("authority.yaml", []byte("cluster_name: acme\nstorage: {type: postgres}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.DSN != dsn {
		t.Errorf("storage.dsn = %q, want %q from %s", cfg.Storage.DSN, dsn, authority.StorageDSNEnv)
	}
	cfg, err = authority.ParseConfig("authority.yaml", []byte("cluster_name: acme\nstorage: {type: postgres, dsn: 'postgres://other/mbot'}\n"))
	if err != nil || cfg.Storage.DSN != "postgres://other/mbot" {
		t.Errorf("a dsn in the file: %q, %v; want it to win over the environment", cfg.Storage.DSN, err)
	}
}
