package authority_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
)

// TestParseConfigRefusesHostileNames checks the values of authority.yaml
// that reach every identity's ssh_config and known_hosts, the SPIFFE trust
// domain and the serving certificate.
func TestParseConfigRefusesHostileNames(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"host pattern with a newline", "cluster_name: acme\nssh:\n  host_patterns: [\"*.acme\\n    ProxyCommand touch /tmp/x\"]\n",
			[]string{"authority.yaml:3:", "ssh.host_patterns[0]", `"*.acme\n    ProxyCommand`, "not a host pattern"}},
		{"host pattern with a comma", "cluster_name: acme\nssh:\n  host_patterns: ['a,b']\n", []string{"authority.yaml:3:", "ssh.host_patterns[0]", "one pattern per list item"}},
		{"negated host pattern", "cluster_name: acme\nssh:\n  host_patterns: ['*.acme', '!bastion.acme']\n", []string{"ssh.host_patterns[1]", `"!bastion.acme"`}},
		{"host pattern with a quote", "cluster_name: acme\nssh:\n  host_patterns: ['a\"b']\n", []string{"ssh.host_patterns[0]"}},
		{"cluster name in upper case", "cluster_name: Acme\n", []string{"authority.yaml:1:", "cluster_name", `"Acme"`, "SPIFFE"}},
		{"cluster name with a space", "cluster_name: acme prod\n", []string{"authority.yaml:1:", "cluster_name"}},
		{"cluster name too long", "cluster_name: " + strings.Repeat("a", 64) + "\n", []string{"authority.yaml:1:", "at most 63"}},
		{"tls name with a wildcard", "cluster_name: acme\ntls_names: ['*.acme.internal']\n", []string{"authority.yaml:2:", "tls_names[0]", "no wildcards"}},
		{"tls name with a space", "cluster_name: acme\ntls_names: [auth.acme.internal, 'a b']\n", []string{"authority.yaml:2:", "tls_names[1]"}},
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
			if strings.ContainsAny(err.Error(), "\n\x1b") {
				t.Errorf("error carries a control character: %q", err)
			}
		})
	}
	cfg, err := authority.ParseConfig("authority.yaml", []byte("cluster_name: acme.prod\nssh:\n  host_patterns: ['*.acme.internal', 'web?.acme', '10.0.0.*']\ntls_names: [auth.acme.internal, 10.0.0.5, '::1']\n"))
	if err != nil {
		t.Fatalf("valid names refused: %v", err)
	}
	if len(cfg.SSH.HostPatterns) != 3 || len(cfg.TLSNames) != 3 {
		t.Errorf("config %+v", cfg)
	}
}

// TestSignHostRefusesBadNames checks mbot sign --host: DNS names and IP
// addresses only. Wildcards are refused even though a host certificate
// could carry one: a wildcard certificate lets one compromised host pass
// for every other.
func TestSignHostRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte("cluster_name: acme\ndata_dir: data\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, cas, err := authority.OpenAdmin(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, names := range [][]string{
		{"*.acme.internal"},
		{"web1.acme.internal", "web?"},
		{"web1\n@cert-authority * ssh-ed25519 AAAA"},
		{"web1 web2"},
		{"-oProxyCommand=x"},
		{"web1..acme"},
		{strings.Repeat("a", 64) + ".acme"},
	} {
		files, err := authority.SignHost(t.Context(), st, cas, names, time.Hour)
		if err == nil || !strings.Contains(err.Error(), "--host") || strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("SignHost(%q) = %d files, %v; want a refusal naming --host", names, len(files), err)
		}
	}
	evs, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Event == "sign.host" {
			t.Errorf("a refused host signing was recorded as signed: %+v", ev)
		}
	}
	if _, err := authority.SignHost(t.Context(), st, cas, []string{"web1.acme.internal", "10.0.0.5", "WEB2.acme.internal."}, time.Hour); err != nil {
		t.Errorf("valid host names refused: %v", err)
	}
}
