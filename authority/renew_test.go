package authority_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"golang.org/x/crypto/ssh"
)

// renewBotsYAML has two token join tokens of bot deployer (secrets
// "secret-1" and "secret-2") and a GitHub one; %[1]s is the issuer.
const renewBotsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec:
  logins: [deploy]
---
kind: role
version: v1
metadata: {name: audit-read}
spec:
  logins: [auditor]
  max_ttl: 8h
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy, audit-read]
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
`

func tokenJoinTokenYAML(name, secret string) string {
	return `---
kind: join_token
version: v1
metadata: {name: ` + name + `}
spec:
  bot: deployer
  method: token
  token:
    secret_hash: ` + verify.HashTokenSecret(secret) + `
    expires: ` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `
`
}

func startRenewAuthority(t *testing.T) *authoritytest.Env {
	t.Helper()
	return authoritytest.Start(t, "acme", renewBotsYAML+tokenJoinTokenYAML("runner-1", "secret-1")+tokenJoinTokenYAML("runner-2", "secret-2"), "")
}

// held is an output's keys with the certificates the authority gave them.
type held struct {
	out  output
	cert *x509.Certificate
	resp *identity.JoinResponse
}

func (h held) tlsCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{h.cert.Raw}, PrivateKey: h.out.keys.TLS, Leaf: h.cert}
}

func heldFrom(t *testing.T, out output, resp *identity.JoinResponse) held {
	t.Helper()
	cert, err := x509.ParseCertificate(pemBlock(t, resp.Outputs[0].TLSCertificate))
	if err != nil {
		t.Fatal(err)
	}
	return held{out: out, cert: cert, resp: resp}
}

func tokenJoin(t *testing.T, a *authority.Authority, joinToken, secret string) held {
	t.Helper()
	out := newOutput(t, "identity")
	resp, err := a.Join(t.Context(), joinRequest(joinToken, "token", secret, time.Hour, out), "test")
	if err != nil {
		t.Fatalf("token join: %v", err)
	}
	return heldFrom(t, out, resp)
}

// renewOverTLS presents h's certificate on a real mTLS connection and asks
// for certificates on out's keys.
func renewOverTLS(t *testing.T, env *authoritytest.Env, h held, out output, ttl time.Duration) (*identity.JoinResponse, error) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(env.Authority.CAs().TLSCert)
	api, err := client.NewAPIWithIdentity(env.URL, roots, h.tlsCertificate())
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	var resp identity.JoinResponse
	err = api.Do(t.Context(), http.MethodPost, identity.PathRenew,
		&identity.RenewRequest{TTLSeconds: int64(ttl / time.Second), Outputs: []identity.OutputRequest{out.req}}, &resp)
	return &resp, err
}

func lineage(t *testing.T, h held) identity.Lineage {
	t.Helper()
	l, err := identity.LineageOf(h.cert)
	if err != nil {
		t.Fatalf("certificate %s: %v", h.cert.SerialNumber, err)
	}
	return l
}

func wantCode(t *testing.T, what string, err error, code identity.ErrorCode, hints ...string) {
	t.Helper()
	var refusal *identity.Error
	if !errors.As(err, &refusal) || refusal.Code != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	for _, h := range hints {
		if !strings.Contains(refusal.Message, h) {
			t.Errorf("%s: message %q does not mention %q", what, refusal.Message, h)
		}
	}
}

// TestRenewGenerations renews a token-joined identity over mTLS, then
// presents a stale copy: that instance is locked for every renewal until
// its bot is removed and created again, while the bot's other joins and
// instances go on.
func TestRenewGenerations(t *testing.T) {
	env := startRenewAuthority(t)
	a := env.Authority
	ctx := t.Context()

	gen1 := tokenJoin(t, a, "runner-1", "secret-1")
	l1 := lineage(t, gen1)
	if l1.Generation != 1 || l1.JoinToken != "runner-1" || len(l1.Chain) != 32 {
		t.Errorf("token join certificate lineage = %+v, want generation 1 of runner-1", l1)
	}
	sshCert, _, _, _, err := ssh.ParseAuthorizedKey([]byte(gen1.resp.Outputs[0].SSHCertificate))
	if err != nil {
		t.Fatal(err)
	}
	if id := sshCert.(*ssh.Certificate).KeyId; !strings.Contains(id, "join_token=runner-1") || !strings.HasSuffix(id, " generation=1") {
		t.Errorf("SSH key ID %q does not name the generation", id)
	}

	out2 := newOutput(t, "identity")
	resp, err := renewOverTLS(t, env, gen1, out2, 2*time.Hour)
	if err != nil {
		t.Fatalf("renewal of generation 1: %v", err)
	}
	gen2 := heldFrom(t, out2, resp)
	if l := lineage(t, gen2); l.Generation != 2 || l.Chain != l1.Chain {
		t.Errorf("renewed lineage = %+v, want generation 2 of chain %s", l, l1.Chain)
	}
	if resp.Bot != "deployer" || resp.JoinToken != "runner-1" || resp.Method != "token" || resp.ClusterName != "acme" || resp.TLSCA == "" {
		t.Errorf("renewal answer names bot %q, join token %q, method %q, cluster %q", resp.Bot, resp.JoinToken, resp.Method, resp.ClusterName)
	}
	if d := time.Until(resp.Outputs[0].NotAfter); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
		t.Errorf("renewed for %s, want the 2h asked", d)
	}
	if gen2.cert.URIs[0].String() != "spiffe://acme/bot/deployer" || gen2.cert.Subject.CommonName != "deployer" {
		t.Errorf("renewed certificate is %q %v", gen2.cert.Subject.CommonName, gen2.cert.URIs)
	}
	ev := lastAudit(t, a)
	if ev.Event != "renew" || !ev.Allowed || ev.Bot != "deployer" || ev.JoinToken != "runner-1" || ev.Claims["generation"] != "1" || len(ev.Serials) != 2 {
		t.Errorf("audit record of the renewal = %+v", ev)
	}

	// The answer to the first renewal was lost: the daemon asks again with
	// the same keys and the same certificate, and is served again.
	resp, err = renewOverTLS(t, env, gen1, out2, time.Hour)
	if err != nil {
		t.Fatalf("retry of the renewal with the same keys: %v", err)
	}
	if l := lineage(t, heldFrom(t, out2, resp)); l.Generation != 2 {
		t.Errorf("retry answered generation %d, want 2", l.Generation)
	}

	out3 := newOutput(t, "identity")
	resp, err = renewOverTLS(t, env, gen2, out3, time.Hour)
	if err != nil {
		t.Fatalf("renewal of generation 2: %v", err)
	}
	gen3 := heldFrom(t, out3, resp)

	// A copy of generation 1 with keys of its own gives itself away.
	_, err = renewOverTLS(t, env, gen1, newOutput(t, "identity"), time.Hour)
	wantCode(t, "renewal with a stale generation", err, identity.CodeInstanceLocked, `of bot "deployer"`, "first joined",
		"mbot unlock bot_instance/"+l1.Chain, "mbot tokens add --bot deployer", "other instances keep renewing")
	evs, err := a.Store().ListAudit(ctx, store.AuditFilter{Limit: 2})
	if err != nil || len(evs) != 2 {
		t.Fatalf("audit records: %v %v", evs, err)
	}
	if lock := evs[1]; lock.Event != "bot_instance.lock" || lock.Bot != "deployer" || lock.JoinToken != "runner-1" || lock.Claims["instance"] != l1.Chain ||
		lock.Claims["runner"] != "test" || lock.Claims["first_join"] == "" || !strings.Contains(lock.Message, "other instances keep renewing") {
		t.Errorf("audit record of the lock = %+v", lock)
	}
	ev = evs[0]
	if ev.Event != "renew" || ev.Allowed || ev.Code != "instance_locked" || ev.Claims["generation"] != "1" || ev.Claims["instance"] != l1.Chain ||
		!strings.Contains(ev.Message, "generation 1") || !strings.Contains(ev.Message, "first joined") || !strings.Contains(ev.Message, l1.Chain) {
		t.Errorf("audit record of the lockout = %+v", ev)
	}

	// Locked: the instance's current generation. The bot's other joins and
	// instances are not.
	_, err = renewOverTLS(t, env, gen3, newOutput(t, "identity"), time.Hour)
	wantCode(t, "renewal of the current generation of a locked instance", err, identity.CodeInstanceLocked)
	if _, err = a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, env.Issuer, nil), time.Hour, newOutput(t, "identity")), "test"); err != nil {
		t.Errorf("github join of a bot with a locked instance: %v", err)
	}
	other := tokenJoin(t, a, "runner-2", "secret-2")
	if _, err := renewOverTLS(t, env, other, newOutput(t, "identity"), time.Hour); err != nil {
		t.Errorf("renewal of another instance of the bot: %v", err)
	}

	// Removing the bot and creating it again lifts the lock.
	for _, kn := range [][2]string{{"join_token", "runner-1"}, {"join_token", "runner-2"}, {"join_token", "github-deploy"}, {"bot", "deployer"}} {
		if err := a.Delete(ctx, kn[0], kn[1], "test"); err != nil {
			t.Fatalf("removing %s/%s: %v", kn[0], kn[1], err)
		}
	}
	again, err := resources.Parse("again.yaml", []byte(strings.ReplaceAll(renewBotsYAML, "%[1]s", env.Issuer.URL)+tokenJoinTokenYAML("runner-2", "secret-2b")))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, again, "test"); err != nil {
		t.Fatal(err)
	}
	fresh := tokenJoin(t, a, "runner-2", "secret-2b")
	if l := lineage(t, fresh); l.Generation != 1 || l.JoinToken != "runner-2" {
		t.Errorf("lineage after unlocking = %+v", l)
	}
	// The identities of before stay refused: their join token is gone.
	_, err = renewOverTLS(t, env, gen3, newOutput(t, "identity"), time.Hour)
	wantCode(t, "renewal from a removed join token", err, identity.CodeRenewalRefused, "runner-1", "no longer exists")
}

// lineageExtension copies cert's lineage extension, for a forgery that has everything but the CA.
func lineageExtension(t *testing.T, cert *x509.Certificate) []pkix.Extension {
	t.Helper()
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(identity.OIDLineage) {
			return []pkix.Extension{ext}
		}
	}
	t.Fatal("the certificate has no lineage extension")
	return nil
}

func TestRenewRefusals(t *testing.T) {
	env := startRenewAuthority(t)
	a := env.Authority
	ctx := t.Context()
	renew := func(cert *x509.Certificate, outs ...output) error {
		req := &identity.RenewRequest{TTLSeconds: 3600}
		for _, o := range outs {
			req.Outputs = append(req.Outputs, o.req)
		}
		_, err := a.Renew(ctx, req, cert, "test")
		return err
	}
	h := tokenJoin(t, a, "runner-1", "secret-1")

	t.Run("no-certificate", func(t *testing.T) {
		wantCode(t, "renewal without a certificate", renew(nil, newOutput(t, "identity")), identity.CodeIdentityRequired, "tls.crt")
		// Over HTTP, a connection without a client certificate.
		api, err := client.NewAPI(env.URL, env.Pin)
		if err != nil {
			t.Fatal(err)
		}
		err = api.Do(ctx, http.MethodPost, identity.PathRenew, &identity.RenewRequest{Outputs: []identity.OutputRequest{newOutput(t, "identity").req}}, nil)
		wantCode(t, "renewal over TLS without a client certificate", err, identity.CodeIdentityRequired)
	})

	t.Run("admin-certificate", func(t *testing.T) {
		cert, err := tls.LoadX509KeyPair(filepath.Join(env.DataDir, authority.AdminDirName, "tls.crt"), filepath.Join(env.DataDir, authority.AdminDirName, "tls.key"))
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, "renewal with an admin certificate", renew(cert.Leaf, newOutput(t, "identity")), identity.CodeIdentityRequired, "not a bot identity")
	})

	t.Run("other-ca", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		spiffe, _ := url.Parse("spiffe://acme/bot/deployer")
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "deployer"}, URIs: []*url.URL{spiffe},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			ExtraExtensions: lineageExtension(t, h.cert)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := x509.ParseCertificate(der)
		wantCode(t, "renewal with a certificate of another CA", renew(forged, newOutput(t, "identity")), identity.CodeIdentityRequired, "not a current certificate")
	})

	t.Run("oidc-joined", func(t *testing.T) {
		out := newOutput(t, "identity")
		resp, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, env.Issuer, nil), time.Hour, out), "test")
		if err != nil {
			t.Fatal(err)
		}
		oidc := heldFrom(t, out, resp)
		if _, err := identity.LineageOf(oidc.cert); !errors.Is(err, identity.ErrNoLineage) {
			t.Errorf("an OIDC join's certificate has a lineage: %v", err)
		}
		wantCode(t, "renewal of an OIDC join's certificate", renew(oidc.cert, newOutput(t, "identity")), identity.CodeRenewalRefused, "joining again")
	})

	t.Run("bad-request", func(t *testing.T) {
		wantCode(t, "renewal without outputs", renew(h.cert), identity.CodeBadRequest, "outputs")
	})

	t.Run("unsupported-key", func(t *testing.T) {
		// Refused before anything advances: role-denied-does-not-advance,
		// next, renews generation 1.
		short, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		bad := newOutput(t, "identity")
		bad.req.TLSPublicKey = tlsPEM(t, &short.PublicKey)
		wantCode(t, "renewal with an RSA-1024 TLS key", renew(h.cert, bad), identity.CodeUnsupportedKey, "tls_public_key", "2048")
	})

	t.Run("role-denied-does-not-advance", func(t *testing.T) {
		bad := newOutput(t, "identity", "root")
		wantCode(t, "renewal asking for a role the bot lacks", renew(h.cert, bad), identity.CodeRoleDenied, "root")
		// Generation 1 is still current: a renewal with other keys is no stale copy.
		out := newOutput(t, "identity", "audit-read")
		req := &identity.RenewRequest{TTLSeconds: int64(24 * time.Hour / time.Second), Outputs: []identity.OutputRequest{out.req}}
		resp, err := a.Renew(ctx, req, h.cert, "test")
		if err != nil {
			t.Fatalf("renewal after a refused one: %v", err)
		}
		if !resp.TTLCapped || time.Until(resp.Outputs[0].NotAfter) > 8*time.Hour+time.Minute || resp.Outputs[0].Roles[0] != "audit-read" {
			t.Errorf("renewal is not capped by the role's max_ttl: capped %v, not after %s, roles %v", resp.TTLCapped, resp.Outputs[0].NotAfter, resp.Outputs[0].Roles)
		}
	})

	t.Run("join-token-removed", func(t *testing.T) {
		h2 := tokenJoin(t, a, "runner-2", "secret-2")
		if err := a.Delete(ctx, "join_token", "runner-2", "test"); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "renewal after its join token was removed", renew(h2.cert, newOutput(t, "identity")), identity.CodeRenewalRefused, "runner-2", "mbot tokens add")
		if locks, err := a.Store().InstanceLocks(context.Background()); err != nil || len(locks) != 0 {
			t.Errorf("a refused renewal locked an instance: %v %v", locks, err)
		}
	})

	t.Run("audited", func(t *testing.T) {
		ev := lastAudit(t, a)
		if ev.Event != "renew" || ev.Allowed || ev.Code != "renewal_refused" || ev.Bot != "deployer" || ev.JoinToken != "runner-2" {
			t.Errorf("last audit record = %+v", ev)
		}
	})
}

// eventually retries join for a few reload intervals until it answers as want does.
func eventually(t *testing.T, what string, join func() error, want func(error) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for err := join(); !want(err); err = join() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInstanceLocksSharedStore checks the instance locks a serving
// authority keeps in memory: its own lock refuses the instance's very next
// renewal, and a lock written or lifted by another process on the same
// store (another replica, mbot rm in local mode) counts at once, since the
// store checks it with the generation. Joins of the bot go on throughout.
func TestInstanceLocksSharedStore(t *testing.T) {
	env := startRenewAuthority(t)
	a := env.Authority
	ctx := t.Context()
	other, err := authority.OpenLocal(ctx, a.Config(), authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	githubJoin := func() error {
		_, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, env.Issuer, nil), time.Hour, newOutput(t, "identity")), "test")
		return err
	}
	// withNewKeys asks for certificates on keys never presented before, as a copy of an identity does.
	withNewKeys := func() *identity.RenewRequest {
		return &identity.RenewRequest{TTLSeconds: 3600, Outputs: []identity.OutputRequest{newOutput(t, "identity").req}}
	}

	// This authority locks the instance: its next renewal is refused at once.
	gen1 := tokenJoin(t, a, "runner-1", "secret-1")
	gen2, err := a.Renew(ctx, withNewKeys(), gen1.cert, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Renew(ctx, withNewKeys(), gen1.cert, "test")
	wantCode(t, "renewal with a stale generation", err, identity.CodeInstanceLocked)
	cert2, err := x509.ParseCertificate(pemBlock(t, gen2.Outputs[0].TLSCertificate))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Renew(ctx, withNewKeys(), cert2, "test")
	wantCode(t, "renewal of the current generation right after the lock", err, identity.CodeInstanceLocked, `of bot "deployer"`)
	if err := githubJoin(); err != nil {
		t.Errorf("join of a bot with a locked instance: %v", err)
	}

	// Another process locks an instance: this one refuses its renewals at once.
	inst2 := tokenJoin(t, a, "runner-2", "secret-2")
	if _, err := other.Renew(ctx, withNewKeys(), inst2.cert, "replica"); err != nil {
		t.Fatal(err)
	}
	_, err = other.Renew(ctx, withNewKeys(), inst2.cert, "replica")
	wantCode(t, "renewal with a stale generation on another replica", err, identity.CodeInstanceLocked)
	_, err = a.Renew(ctx, withNewKeys(), inst2.cert, "test")
	wantCode(t, "renewal after another process locked the instance", err, identity.CodeInstanceLocked, "first joined", "is locked since")
	if err := githubJoin(); err != nil {
		t.Errorf("join after another process locked an instance: %v", err)
	}

	// Another process removes the bot: its instances and their locks go.
	for _, name := range []string{"github-deploy", "runner-1", "runner-2"} {
		if err := other.Delete(ctx, "join_token", name, "test"); err != nil {
			t.Fatalf("removing join_token/%s: %v", name, err)
		}
	}
	if err := other.Delete(ctx, "bot", "deployer", "test"); err != nil {
		t.Fatal(err)
	}
	if list, err := a.BotInstances(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("instances after removing the bot = %+v, %v", list, err)
	}
}

// TestUnlock lifts instance locks with Unlock and UnlockInstance: the lock
// is gone at once for this process and for another; the unlocked
// instance's identities stop renewing, the daemon's and the copy's, while
// the bot's other instances and a join with a new secret renew. Something
// that is not locked is left alone.
func TestUnlock(t *testing.T) {
	env := startRenewAuthority(t)
	a := env.Authority
	ctx := t.Context()
	// renewed renews h over mTLS and returns the new identity.
	renewed := func(what string, h held) held {
		t.Helper()
		out := newOutput(t, "identity")
		resp, err := renewOverTLS(t, env, h, out, time.Hour)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return heldFrom(t, out, resp)
	}
	// lockWith renews h, then presents h again with other keys, as a copy does.
	lockWith := func(h held) held {
		t.Helper()
		next := renewed("renewal before the copy", h)
		_, err := renewOverTLS(t, env, h, newOutput(t, "identity"), time.Hour)
		wantCode(t, "renewal of a copied identity", err, identity.CodeInstanceLocked)
		return next
	}

	gen1 := tokenJoin(t, a, "runner-1", "secret-1")
	bystander := tokenJoin(t, a, "runner-2", "secret-2")
	daemon := lockWith(gen1)
	chain := lineage(t, gen1).Chain

	list, err := a.BotInstances(ctx, "deployer")
	if err != nil || len(list) != 2 {
		t.Fatalf("BotInstances = %+v, %v", list, err)
	}
	for _, in := range list {
		want := map[string]string{"runner-1": "locked", "runner-2": "active"}[in.JoinToken]
		if in.State != want || in.Runner != "test" || in.FirstJoin.IsZero() || (in.ID == chain) != (in.JoinToken == "runner-1") {
			t.Errorf("instance %+v, want %s", in, want)
		}
	}

	if _, err := a.Unlock(ctx, "nobody", "test admin"); err == nil || !strings.Contains(err.Error(), `no bot named "nobody"`) {
		t.Errorf("unlocking an unknown bot: %v", err)
	}
	if _, err := a.UnlockInstance(ctx, "../x", "test admin"); err == nil || !strings.Contains(err.Error(), "not a bot instance ID") {
		t.Errorf("unlocking a malformed instance ID: %v", err)
	}
	if _, err := a.UnlockInstance(ctx, lineage(t, bystander).Chain, "test admin"); err == nil || !strings.Contains(err.Error(), "is not locked") {
		t.Errorf("unlocking an instance that is not locked: %v", err)
	}
	u, err := a.UnlockInstance(ctx, chain, "test admin")
	if err != nil {
		t.Fatal(err)
	}
	if u.Bot != "deployer" || len(u.Instances) != 1 || u.Instances[0].ID != chain || u.Instances[0].JoinToken != "runner-1" ||
		u.Instances[0].Runner != "test" || !strings.Contains(u.Instances[0].Reason, "generation 1") || u.Instances[0].LockedSince.IsZero() ||
		strings.Join(u.EndedJoinTokens, ",") != "runner-1" || u.BotLock != nil {
		t.Errorf("UnlockInstance = %+v", u)
	}
	ev := lastAudit(t, a)
	if ev.Event != "bot_instance.unlock" || !ev.Allowed || ev.Bot != "deployer" || ev.JoinToken != "runner-1" || ev.Remote != "test admin" ||
		ev.Claims["instance"] != chain || !strings.Contains(ev.Message, "first joined") || !strings.Contains(ev.Message, "generation 1") {
		t.Errorf("audit record of the unlock = %+v", ev)
	}

	// Neither holder of the copied identity renews, and neither locks again;
	// the other instance renews on.
	for _, h := range []struct {
		name string
		held held
	}{{"the daemon's identity", daemon}, {"the copy", gen1}} {
		_, err := renewOverTLS(t, env, h.held, newOutput(t, "identity"), time.Hour)
		wantCode(t, "renewal of "+h.name+" after the unlock", err, identity.CodeRenewalRefused,
			`bot "deployer"`, "unlocked", "mbot tokens add --bot deployer")
	}
	if ev := lastAudit(t, a); ev.Event != "renew" || ev.Code != "renewal_refused" || ev.JoinToken != "runner-1" {
		t.Errorf("audit record of the refused renewal = %+v", ev)
	}
	if locks, err := a.Store().InstanceLocks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("locked again: %v %v", locks, err)
	}
	bystander = renewed("renewal of the bot's other instance", bystander)

	// Unlocking the bot lifts the locks of its instances; with none locked
	// it is refused and ends no renewals.
	if _, err := a.Unlock(ctx, "deployer", "test admin"); err == nil || !strings.Contains(err.Error(), `bot "deployer" has no locked instance`) {
		t.Errorf("unlocking a bot that is not locked: %v", err)
	}
	bystander = renewed("renewal after a refused unlock", bystander)

	// Another process on the same store unlocks the bot: this one's copy
	// of the lock goes at its next reload, and the store ends the chain at once.
	daemon = lockWith(bystander)
	other, err := authority.OpenLocal(ctx, a.Config(), authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	u, err = other.Unlock(ctx, "deployer", "local admin")
	if err != nil || len(u.Instances) != 1 || u.Instances[0].JoinToken != "runner-2" {
		t.Fatalf("Unlock by another process = %+v, %v", u, err)
	}
	eventually(t, "renewal after another process unlocked the bot", func() error {
		_, err := renewOverTLS(t, env, daemon, newOutput(t, "identity"), time.Hour)
		return err
	}, func(err error) bool {
		var refusal *identity.Error
		return errors.As(err, &refusal) && refusal.Code == identity.CodeRenewalRefused && strings.Contains(refusal.Message, "unlocked")
	})
}
