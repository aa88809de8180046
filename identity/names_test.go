package identity

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	good := []string{"a", "deploy", "github-deploy", "deployer-token-3f9c0a1b", "audit_read", "v1.2", strings.Repeat("a", 63)}
	bad := []string{"", "-x", "x-", ".x", "Deploy", "a b", "a\nb", "a/b", "a*", "a,b", "é", strings.Repeat("a", 64), "a\x1b[2J"}
	for _, n := range good {
		if err := CheckName("name", n); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		err := CheckName("name", n)
		if err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", n)
			continue
		}
		if strings.ContainsAny(err.Error(), "\n\x1b") {
			t.Errorf("CheckName(%q) message carries a control character: %q", n, err)
		}
	}
}

func TestCheckLogin(t *testing.T) {
	good := []string{"ubuntu", "ec2-user", "ci_migrate", "Administrator", "host1$", "a.b", "_svc"}
	bad := []string{"", "-oProxyCommand=x", "a b", "a,b", "*", "root\nProxyCommand x", "a\tb", "$", "a$b", "ünï", strings.Repeat("a", 33), "a@b", "a\"b"}
	for _, n := range good {
		if err := CheckLogin("login", n); err != nil {
			t.Errorf("CheckLogin(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := CheckLogin("login", n); err == nil {
			t.Errorf("CheckLogin(%q) = nil, want an error", n)
		}
	}
}

func TestCheckHostPattern(t *testing.T) {
	good := []string{"*.acme.internal", "web?.acme.internal", "10.0.0.1", "::1", "host_1"}
	bad := []string{"", "a b", "*\n  ProxyCommand x", "a,b", "!evil", "a\"b", "a#b", strings.Repeat("a", 254)}
	for _, n := range good {
		if err := CheckHostPattern("host pattern", n); err != nil {
			t.Errorf("CheckHostPattern(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := CheckHostPattern("host pattern", n); err == nil {
			t.Errorf("CheckHostPattern(%q) = nil, want an error", n)
		}
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("short", 10); got != "short" {
		t.Errorf("Truncate kept %q", got)
	}
	got := Truncate(strings.Repeat("é", 10), 5) // é is 2 bytes: cut at 4
	if !strings.HasPrefix(got, "éé…") || !strings.HasSuffix(got, "(+16 bytes)") {
		t.Errorf("Truncate = %q", got)
	}
}
