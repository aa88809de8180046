package identity_test

import (
	"testing"

	"github.com/mbot-dev/mbot/identity"
)

func TestMatchPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, value string
		spiffe, want   bool
	}{
		{"/ci/payments/*", "/ci/payments/deploy", true, true},
		{"/ci/payments/*", "/ci/payments/a/b", true, true},
		{"/ci/payments/*", "/ci/payments", true, false},
		{"/ci/payments/*", "/ci/paymentsx/a", true, false},
		{"/ci/deploy", "/ci/deploy", true, true},
		{"/ci/deploy", "/ci/deploy/x", true, false},
		{"*.ci.acme.internal", "vm1.ci.acme.internal", false, true},
		{"*.ci.acme.internal", "VM1.CI.acme.internal", false, true},
		{"*.ci.acme.internal", "a.vm1.ci.acme.internal", false, false},
		{"*.ci.acme.internal", "ci.acme.internal", false, false},
		{"*.ci.acme.internal", "*.ci.acme.internal", false, false},
		{"db.acme.internal", "db.acme.internal", false, true},
		{"db.acme.internal", "db2.acme.internal", false, false},
	} {
		var got bool
		if tc.spiffe {
			got = identity.MatchSPIFFEPattern(tc.pattern, tc.value)
		} else {
			got = identity.MatchDNSPattern(tc.pattern, tc.value)
		}
		if got != tc.want {
			t.Errorf("match(%q, %q) = %t, want %t", tc.pattern, tc.value, got, tc.want)
		}
	}
}

func TestOutputNameRules(t *testing.T) {
	for _, tc := range []struct {
		check func(what, v string) error
		value string
		ok    bool
	}{
		{identity.CheckDBName, "app", true},
		{identity.CheckDBName, "app_2.v$1", true},
		{identity.CheckDBName, "-app", false},
		{identity.CheckDBName, "app name", false},
		{identity.CheckDBName, "app'", false},
		{identity.CheckDBName, string(make([]byte, 64)), false},
		{identity.CheckKubernetesName, "system:masters", true},
		{identity.CheckKubernetesName, "a,b", false},
		{identity.CheckKubernetesName, "é", false},
		{identity.CheckSPIFFEPath, "/ci/x", true},
		{identity.CheckSPIFFEPath, "/ci/*", false},
		{identity.CheckSPIFFEPath, "/", false},
		{identity.CheckSPIFFEPath, "/ci//x", false},
		{identity.CheckSPIFFEPattern, "/ci/*", true},
		{identity.CheckDNSPattern, "*.a.b", true},
		{identity.CheckDNSPattern, "*.*.b", false},
		{identity.CheckDNSPattern, "-a.b", false},
		{identity.CheckAudience, "https://x", true},
		{identity.CheckAudience, "", false},
		{identity.CheckAudience, "a\x00", false},
	} {
		if err := tc.check("v", tc.value); (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok=%t", tc.value, err, tc.ok)
		}
	}
}

func TestCheckHostName(t *testing.T) {
	for name, ok := range map[string]bool{
		"web1.ci.acme.internal": true,
		"web1":                  true,
		"Web1.CI.acme.internal": true,
		"10.0.0.5":              true,
		"*.ci.acme.internal":    false, // a wildcard principal would stand for every host below
		"*":                     false,
		"web1.*.acme.internal":  false,
		"web1,web2":             false, // OpenSSH pattern lists
		"web?":                  false,
		"!web1":                 false,
		"web1 web2":             false,
		"web1\n":                false,
		"":                      false,
		"-web1":                 false,
	} {
		if err := identity.CheckHostName("host name", name); (err == nil) != ok {
			t.Errorf("CheckHostName(%q) = %v, want ok=%t", name, err, ok)
		}
	}
}
