package locks_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/identity"
)

// TestMatch: each kind of lock covers what it names and nothing else; an
// expired lock covers nothing; the refusal names the lock, its reason and
// how to lift it.
func TestMatch(t *testing.T) {
	now := time.Now()
	since := now.Add(-time.Hour)
	set := locks.NewSet(7, []locks.Lock{
		{Kind: locks.KindBot, Target: "deployer", Reason: "CI secret leaked", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindClaim, Target: "repository=acme/app", Reason: "repository compromised", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindRole, Target: "prod", Reason: "incident", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindJoinToken, Target: "runner-1", Reason: "stolen runner", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindInstance, Target: "5d41402abc4b2a76b9719d911017c592", Reason: "copy seen", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindCert, Target: "tls:AB12", Reason: "key on a laptop", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindCert, Target: "77", Reason: "bare serial", Since: since, LockedBy: "admin alice"},
		{Kind: locks.KindBot, Target: "old", Reason: "was", Since: since, Expires: now.Add(-time.Minute), LockedBy: "admin alice"},
	})
	if set.Generation() != 7 {
		t.Errorf("Generation = %d", set.Generation())
	}
	for _, c := range []struct {
		name string
		sub  locks.Subject
		want string // the lock's name, "" for none
		code identity.ErrorCode
	}{
		{"locked bot", locks.Subject{Bot: "deployer"}, "bot/deployer", identity.CodeBotLocked},
		{"other bot", locks.Subject{Bot: "builder", JoinToken: "runner-2"}, "", ""},
		{"expired lock", locks.Subject{Bot: "old"}, "", ""},
		{"claim, exact", locks.Subject{Bot: "builder", Claims: map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}}, "claim/repository=acme/app", identity.CodeClaimLocked},
		{"claim, other value", locks.Subject{Bot: "builder", Claims: map[string]string{"repository": "acme/app2"}}, "", ""},
		{"claim, prefix is no match", locks.Subject{Bot: "builder", Claims: map[string]string{"repository": "acme/ap"}}, "", ""},
		{"role", locks.Subject{Bot: "builder", Roles: []string{"dev", "prod"}}, "role/prod", identity.CodeRoleLocked},
		{"join token", locks.Subject{Bot: "builder", JoinToken: "runner-1"}, "join_token/runner-1", identity.CodeJoinTokenLocked},
		{"instance", locks.Subject{Bot: "builder", Instance: "5d41402abc4b2a76b9719d911017c592"}, "bot_instance/5d41402abc4b2a76b9719d911017c592", identity.CodeInstanceLocked},
		{"cert by prefixed serial", locks.Subject{Bot: "builder", Serials: []string{"tls:AB12"}}, "cert/tls:AB12", identity.CodeCertLocked},
		{"cert by bare serial", locks.Subject{Bot: "builder", Serials: []string{"ssh:77"}}, "cert/77", identity.CodeCertLocked},
		{"other cert", locks.Subject{Bot: "builder", Serials: []string{"ssh:78", "tls:AB13"}}, "", ""},
	} {
		l, ok := set.Match(c.sub, now)
		if ok != (c.want != "") || (ok && l.Name() != c.want) {
			t.Errorf("%s: Match = %v %v, want %q", c.name, l.Name(), ok, c.want)
			continue
		}
		if !ok {
			continue
		}
		r := l.Refusal("join")
		if r.Code != c.code || !strings.Contains(r.Message, l.Reason) || !strings.Contains(r.Message, "mbot unlock") || !strings.Contains(r.Message, l.Name()) {
			t.Errorf("%s: refusal %s: %s", c.name, r.Code, r.Message)
		}
	}
	if l, _ := set.Lookup(locks.KindClaim, "repository=acme/app", now); !strings.Contains(l.Refusal("join").Message, "mbot unlock --claim repository=acme/app") {
		t.Errorf("a claim lock's refusal: %s", l.Refusal("join").Message)
	}
	if got := len(set.List(now)); got != 7 {
		t.Errorf("List has %d locks, want the 7 that have not expired", got)
	}
}

// TestNormalizeSerial: serials as mbot audit and openssl print them.
func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{
		"ssh:123": "ssh:123", "SSH:0123": "ssh:123", "tls:ab12": "tls:AB12", "tls:00:AB:12": "tls:AB12", "x509:AB12": "tls:AB12",
		"ab12": "AB12", "0042": "42",
	} {
		if got, err := locks.NormalizeSerial(in); err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ssh:", "ssh:-1", "ssh:x", "tls:xyz", "pgp:12", "12\n34", strings.Repeat("f", 65)} {
		if got, err := locks.NormalizeSerial(bad); err == nil {
			t.Errorf("NormalizeSerial(%q) = %q, want an error", bad, got)
		}
	}
}

// TestCovers: a certificate is covered by what would refuse its join, and
// by a copied bound_keypair key's lock, which joins leave to the verifier.
func TestCovers(t *testing.T) {
	now := time.Now()
	set := locks.NewSet(1, []locks.Lock{
		{Kind: locks.KindJoinToken, Target: "kp", Reason: "key copied", Since: now, LockedBy: "authority", Automatic: true},
		{Kind: locks.KindCert, Target: "ssh:42", Reason: "leaked", Since: now, LockedBy: "admin"},
	})
	if _, ok := set.Match(locks.Subject{Bot: "b", JoinToken: "kp"}, now); ok {
		t.Error("Match refuses a join of a bound_keypair token the authority locked; its verifier does")
	}
	if l, ok := set.Covers(locks.Subject{Bot: "b", JoinToken: "kp"}, now); !ok || l.Target != "kp" {
		t.Errorf("Covers of a certificate from the copied key's token = %v %v", l, ok)
	}
	if l, ok := set.Covers(locks.Subject{Bot: "b", Serials: []string{locks.CertSerial("ssh-user-ca", "42")}}, now); !ok || l.Name() != "cert/ssh:42" {
		t.Errorf("Covers by serial = %v %v", l, ok)
	}
	if _, ok := set.Covers(locks.Subject{Bot: "b", Serials: []string{locks.CertSerial("tls-ca", "42")}}, now); ok {
		t.Error("an ssh: serial lock covers an X.509 certificate of the same number")
	}
}

// TestMatchCoveredSerials: a root's claim or join_token lock on a leaf
// names the root certificates it covers; Match refuses those by serial,
// as the lock they come from, until it expires, and nothing else.
func TestMatchCoveredSerials(t *testing.T) {
	now := time.Now()
	set := locks.NewSet(0, []locks.Lock{
		{Kind: locks.KindClaim, Target: "repository=acme/app", Reason: "repository compromised", Since: now, Cluster: "root.example",
			Serials: []string{"tls:AB12", "tls:CD34"}},
		{Kind: locks.KindJoinToken, Target: "runner-1", Reason: "stolen", Since: now, Expires: now.Add(time.Minute), Cluster: "root.example",
			Serials: []string{"tls:EF56"}},
	})
	for _, c := range []struct {
		serial string
		at     time.Time
		want   string
	}{
		{"tls:CD34", now, "claim/repository=acme/app"},
		{"tls:EF56", now, "join_token/runner-1"},
		{"tls:EF56", now.Add(2 * time.Minute), ""},
		{"tls:9999", now, ""},
		{"CD34", now, ""}, // the serials are the root's, with their prefix
	} {
		l, ok := set.Match(locks.Subject{Bot: "deployer", Serials: []string{c.serial}}, c.at)
		if ok != (c.want != "") || ok && l.Name() != c.want {
			t.Errorf("serial %s at +%s: Match = %q %v, want %q", c.serial, c.at.Sub(now), l.Name(), ok, c.want)
		}
		if ok && !strings.Contains(l.Refusal("exchange").Message, "on root cluster root.example") {
			t.Errorf("serial %s: the refusal does not name the root: %s", c.serial, l.Refusal("exchange").Message)
		}
	}
}
