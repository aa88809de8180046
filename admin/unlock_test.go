package admin_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
)

// runnerTokenYAML is a token join token of bot deployer whose secret is its name.
func runnerTokenYAML(name string) string {
	return "---\nkind: join_token\nversion: v1\nmetadata: {name: " + name + "}\nspec:\n  bot: deployer\n  method: token\n  token:\n" +
		"    secret_hash: " + verify.HashTokenSecret(name) + "\n    expires: " + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + "\n"
}

// lockDeployer joins with token joinToken, renews, and presents the joined
// certificate again with other keys, as a copy of it would: the bot is locked.
func lockDeployer(t *testing.T, a *authority.Authority, joinToken string) {
	t.Helper()
	ctx := t.Context()
	outputs := func() []identity.OutputRequest {
		k, err := identity.NewKeys()
		if err != nil {
			t.Fatal(err)
		}
		return []identity.OutputRequest{{Name: "identity", SSHPublicKey: k.SSHPublicKey(), TLSPublicKey: k.TLSPublicKeyPEM()}}
	}
	resp, err := a.Join(ctx, &identity.JoinRequest{JoinToken: joinToken, Method: "token", Proof: joinToken, TTLSeconds: 3600, Outputs: outputs()}, "test")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Outputs[0].TLSCertificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Renew(ctx, &identity.RenewRequest{TTLSeconds: 3600, Outputs: outputs()}, cert, "test"); err != nil {
		t.Fatal(err)
	}
	_, err = a.Renew(ctx, &identity.RenewRequest{TTLSeconds: 3600, Outputs: outputs()}, cert, "copy")
	var refusal *identity.Error
	if !errors.As(err, &refusal) || refusal.Code != identity.CodeBotLocked {
		t.Fatalf("renewal of a copied identity: %v, want bot_locked", err)
	}
}

// TestUnlock unlocks a bot remotely, through the admin API, and locally, on
// the store of the running authority, and finds each unlock in the audit log.
func TestUnlock(t *testing.T) {
	e := authoritytest.Start(t, "admin.test", botsYAML+runnerTokenYAML("runner-1")+runnerTokenYAML("runner-2"), "")
	a := e.Authority
	ctx := t.Context()
	githubJoin := func() error {
		c := simci.GitHubClaims()
		c["aud"] = "admin.test"
		tok, err := e.Issuer.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		k, err := identity.NewKeys()
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Join(ctx, &identity.JoinRequest{JoinToken: "github-deploy", Method: "github", Proof: tok, TTLSeconds: 3600,
			Outputs: []identity.OutputRequest{{Name: "identity", SSHPublicKey: k.SSHPublicKey(), TLSPublicKey: k.TLSPublicKeyPEM()}}}, "test")
		return err
	}
	remote, err := admin.OpenRemote(filepath.Join(e.DataDir, authority.AdminDirName), "")
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	local, err := admin.OpenLocal(ctx, a.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()

	for _, tc := range []struct {
		name      string
		client    admin.Client
		joinToken string
		actor     string
		// atOnce: the admin API lifts the serving authority's lock at once;
		// a local unlock reaches it at its next reload.
		atOnce bool
	}{
		{"remote", remote, "runner-1", "admin admin from 127.0.0.1", true},
		{"local", local, "runner-2", "local admin", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lockDeployer(t, a, tc.joinToken)
			if _, err := tc.client.Unlock(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), `no bot named "nobody"`) {
				t.Errorf("unlocking an unknown bot: %v", err)
			}
			u, err := tc.client.Unlock(ctx, "deployer")
			if err != nil {
				t.Fatal(err)
			}
			if u.Bot != "deployer" || u.LockedBy != tc.joinToken || u.LockedSince.IsZero() || strings.Join(u.EndedJoinTokens, ",") != tc.joinToken {
				t.Errorf("Unlock = %+v", u)
			}
			err = githubJoin()
			for deadline := time.Now().Add(5 * time.Second); err != nil && !tc.atOnce && time.Now().Before(deadline); err = githubJoin() {
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("join after the unlock: %v", err)
			}
			if _, err := tc.client.Unlock(ctx, "deployer"); err == nil || !strings.Contains(err.Error(), `bot "deployer" is not locked`) {
				t.Errorf("unlocking a bot that is not locked: %v", err)
			}
			events, err := tc.client.Audit(ctx, store.AuditFilter{Bot: "deployer"})
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for _, ev := range events {
				found = found || (ev.Event == "bot.unlock" && ev.JoinToken == tc.joinToken && strings.HasPrefix(ev.Remote, tc.actor))
			}
			if !found {
				t.Errorf("no bot.unlock record by %q in the audit log: %+v", tc.actor, events)
			}
		})
	}
}
