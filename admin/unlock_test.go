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
// certificate again with other keys, as a copy of it would: the instance is
// locked. It returns the instance's ID.
func lockDeployer(t *testing.T, a *authority.Authority, joinToken string) string {
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
	if !errors.As(err, &refusal) || refusal.Code != identity.CodeInstanceLocked {
		t.Fatalf("renewal of a copied identity: %v, want instance_locked", err)
	}
	l, err := identity.LineageOf(cert)
	if err != nil {
		t.Fatal(err)
	}
	return l.Chain
}

// TestUnlock unlocks a bot and a bot instance remotely, through the admin
// API, and locally, on the store of the running authority, lists the
// instances, and finds each unlock in the audit log.
func TestUnlock(t *testing.T) {
	e := authoritytest.Start(t, "admin.test", botsYAML+runnerTokenYAML("runner-1")+runnerTokenYAML("runner-2")+runnerTokenYAML("runner-3"), "")
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
		// byInstance unlocks bot_instance/ID rather than the bot.
		byInstance bool
	}{
		{"remote bot", remote, "runner-1", "admin admin from 127.0.0.1", false},
		{"remote instance", remote, "runner-2", "admin admin from 127.0.0.1", true},
		{"local instance", local, "runner-3", "local admin", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := lockDeployer(t, a, tc.joinToken)
			// Only the instance is locked: the bot still joins.
			if err := githubJoin(); err != nil {
				t.Errorf("join of a bot with a locked instance: %v", err)
			}
			list, err := tc.client.BotInstances(ctx, "deployer")
			if err != nil {
				t.Fatal(err)
			}
			var listed bool
			for _, in := range list {
				listed = listed || (in.ID == id && in.State == "locked" && in.JoinToken == tc.joinToken && in.Runner == "test" && in.Generation == 2)
			}
			if !listed {
				t.Errorf("mbot get bot_instances does not list %s as locked: %+v", id, list)
			}
			if _, err := tc.client.Unlock(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), `no bot named "nobody"`) {
				t.Errorf("unlocking an unknown bot: %v", err)
			}
			var u *admin.Unlocked
			if tc.byInstance {
				u, err = tc.client.UnlockInstance(ctx, id)
			} else {
				u, err = tc.client.Unlock(ctx, "deployer")
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Bot != "deployer" || len(u.Instances) != 1 || u.Instances[0].ID != id || u.Instances[0].JoinToken != tc.joinToken ||
				u.Instances[0].LockedSince.IsZero() || u.Instances[0].FirstJoin.IsZero() || strings.Join(u.EndedJoinTokens, ",") != tc.joinToken {
				t.Errorf("Unlock = %+v", u)
			}
			if _, err := tc.client.Unlock(ctx, "deployer"); err == nil || !strings.Contains(err.Error(), `bot "deployer" has no locked instance`) {
				t.Errorf("unlocking a bot that is not locked: %v", err)
			}
			if _, err := tc.client.UnlockInstance(ctx, id); err == nil || !strings.Contains(err.Error(), "no bot instance "+id) {
				t.Errorf("unlocking an instance that was unlocked already: %v", err)
			}
			events, err := tc.client.Audit(ctx, store.AuditFilter{Bot: "deployer"})
			if err != nil {
				t.Fatal(err)
			}
			want := map[bool]string{false: "bot.unlock", true: "bot_instance.unlock"}[tc.byInstance]
			var found bool
			for _, ev := range events {
				found = found || (ev.Event == want && ev.JoinToken == tc.joinToken && strings.HasPrefix(ev.Remote, tc.actor))
			}
			if !found {
				t.Errorf("no %s record by %q in the audit log: %+v", want, tc.actor, events)
			}
		})
	}
}
