package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/trust"
	"github.com/mbot-dev/mbot/identity"
)

// TestTrustedClusterRotation rotates the TLS CA of the root, then of the
// leaf, with the built binary, while the leaf trusts the root and jobs
// exchange through the relay. Neither side's trusted_cluster or
// leaf_cluster changes: each follows the other's rotation by the CAs it
// announces over a connection pinned to the CA it knew (GET
// /v1/cluster/ca serves both CAs mid-rotation).
func TestTrustedClusterRotation(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	leafOut := func(dir string) string {
		return fmt.Sprintf("  - {type: identity, destination: %s, cluster: %s}\n", filepath.Join(dir, "eu"), leafName)
	}
	// rootIdentity joins the root and returns the root identity's directory.
	rootIdentity := func(t *testing.T) string {
		t.Helper()
		dir := t.TempDir()
		if res := tc.issue(t, tc.mbotYAML(t, dir, "", ""), tokenDeployer); res.code != 0 {
			t.Fatalf("mbot issue (root only): %s", res)
		}
		return filepath.Join(dir, "root")
	}
	// exchanges exchanges each root identity with the leaf through the relay.
	exchanges := func(t *testing.T, phase string, ids map[string]string) {
		t.Helper()
		for issued, dir := range ids {
			if err := exchangeWith(t, tc, dir); err != nil {
				t.Errorf("%s: exchange of the root identity issued %s: %v\nleaf:\n%s", phase, issued, err, tc.leafAuth.logs)
			}
		}
	}
	// job runs mbot issue with a root and a leaf identity output.
	job := func(t *testing.T, phase string) {
		t.Helper()
		dir := t.TempDir()
		if res := tc.issue(t, tc.mbotYAML(t, dir, "", leafOut(dir)), tokenDeployer); res.code != 0 {
			t.Fatalf("%s: mbot issue with a leaf output: %s\nroot:\n%s\nleaf:\n%s", phase, res, tc.rootAuth.logs, tc.leafAuth.logs)
		}
		checkLeafIdentity(t, tc, dir)
	}
	// redial cuts the tunnel; the leaf dials again by itself, and both
	// ends check each other's certificates anew.
	redial := func(t *testing.T) {
		t.Helper()
		tc.proxy.Cut()
		tc.waitConnected(t, false)
		tc.proxy.Restore(t)
		tc.waitConnected(t, true)
	}

	t.Run("root-tls-ca", func(t *testing.T) {
		c := tc.root
		oldPin := c.pin
		before := rootIdentity(t)
		exchanges(t, "standby", map[string]string{"before": before}) // the leaf fetches the root's CA
		if res := c.rotate(t, "--type", "tls", "--grace", "1h"); res.code != 0 {
			t.Fatalf("rotate (init): %s", res)
		}
		exchanges(t, "init", map[string]string{"before": before})
		job(t, "init")

		if res := c.rotate(t, "--type", "tls", "--phase", "update_clients"); res.code != 0 {
			t.Fatalf("rotate (update_clients): %s", res)
		}
		newPin := tlsPinAfterRotation(t, c)
		// Signed by the new CA: the leaf fetches the root's bundle again
		// when it meets a CA it does not know yet.
		mid := rootIdentity(t)
		waitRefetch(t)
		exchanges(t, "update_clients", map[string]string{"before": before, "during": mid})
		job(t, "update_clients")

		if res := c.rotate(t, "--type", "tls", "--phase", "update_servers", "--force"); res.code != 0 {
			t.Fatalf("rotate (update_servers): %s", res)
		}
		c.pin = oldPin + "," + newPin // what jobs are told during the rotation
		waitServingCA(t, c, filepath.Join(mid, identity.FileCA), newPin)
		// The leaf's trusted_cluster still pins the old CA: the redialled
		// tunnel is accepted by the new CA's pin, which the root announced.
		redial(t)
		after := rootIdentity(t)
		exchanges(t, "update_servers", map[string]string{"before": before, "during": mid, "after": after})
		job(t, "update_servers")

		if res := c.rotate(t, "--type", "tls", "--phase", "standby", "--force"); res.code != 0 {
			t.Fatalf("rotate (standby): %s", res)
		}
		c.pin = newPin
		redial(t)
		// Identities of the old CA are dropped with it, on the root as on
		// the leaf; the others work until they expire.
		exchanges(t, "standby", map[string]string{"during": mid, "after": after, "after standby": rootIdentity(t)})
		job(t, "standby")
	})

	t.Run("leaf-tls-ca", func(t *testing.T) {
		c := tc.leaf
		oldPin := c.pin
		if res := c.rotate(t, "--type", "tls", "--grace", "1h"); res.code != 0 {
			t.Fatalf("rotate (init): %s", res)
		}
		newPin := tlsPinAfterRotation(t, c)
		// The root asks the leaf for its CAs down the tunnel (at attach and
		// every few seconds) and from then on accepts tunnel certificates
		// of the new CA for this leaf.
		waitForLog(t, tc.rootAuth, "leaf announced its TLS CAs", newPin)
		job(t, "init")

		if res := c.rotate(t, "--type", "tls", "--phase", "update_clients"); res.code != 0 {
			t.Fatalf("rotate (update_clients): %s", res)
		}
		job(t, "update_clients")

		if res := c.rotate(t, "--type", "tls", "--phase", "update_servers", "--force"); res.code != 0 {
			t.Fatalf("rotate (update_servers): %s", res)
		}
		caFile := filepath.Join(t.TempDir(), "leaf-ca.crt")
		writeFile(t, caFile, c.export(t, "tls-ca"), 0o600)
		waitServingCA(t, c, caFile, newPin)
		// The tunnel's client certificate now comes from the new CA, which
		// the root's leaf_cluster (pinning the old one) accepts as announced.
		redial(t)
		job(t, "update_servers")
		var attached bool
		for _, ev := range auditEvents(t, tc.root, "tunnel") {
			attached = ev.Allowed && ev.Claims["leaf"] == leafName // the last one counts
		}
		if !attached {
			t.Errorf("the root's last tunnel record is not an attach of %s: %+v", leafName, auditEvents(t, tc.root, "tunnel"))
		}

		if res := c.rotate(t, "--type", "tls", "--phase", "standby", "--force"); res.code != 0 {
			t.Fatalf("rotate (standby): %s", res)
		}
		redial(t)
		job(t, "standby")
		if out := tc.waitConnected(t, true); !strings.Contains(out, oldPin) {
			t.Errorf("the root's leaf_cluster no longer pins the leaf's first CA, yet this test changed nothing:\n%s", out)
		}

		// The root's admin then changes spec.ca_pin, as rotate --status
		// says: what the leaf announced under the old pin no longer counts,
		// so a wrong pin is refused and the new one attaches.
		applyLeafCluster := func(pin string) {
			path := filepath.Join(t.TempDir(), "leaf.yaml")
			writeFile(t, path, fmt.Sprintf("kind: leaf_cluster\nversion: v1\nmetadata: {name: %s}\nspec: {ca_pin: %s}\n", leafName, pin), 0o600)
			mustMbot(t, baseEnv(tc.root.home), "apply", "-f", path, "--config", tc.root.config)
			time.Sleep(300 * time.Millisecond) // the running root reads resources changed by others every 250ms
		}
		tc.proxy.Cut()
		tc.waitConnected(t, false)
		applyLeafCluster(tc.root.pin) // not the leaf's
		tc.proxy.Restore(t)
		waitForLog(t, tc.rootAuth, "tunnel refused", "presents no certificate of the CA pinned by leaf_cluster "+leafName)
		applyLeafCluster(newPin)
		if out := tc.waitConnected(t, true); !strings.Contains(out, newPin) {
			t.Errorf("mbot get leaf_clusters does not show the new pin:\n%s", out)
		}
		job(t, "new pin")
	})
}

// waitRefetch waits out trust.MinRefetch, so that the leaf, which last
// fetched the root's CA bundle before its rotation started, fetches it
// again on the first root identity of a CA it does not know: without it,
// it would refuse until its next refresh (trust.RefreshInterval/2).
func waitRefetch(t *testing.T) {
	t.Helper()
	time.Sleep(trust.MinRefetch)
}

// tlsPinAfterRotation is the pin rotate --status gives for the new TLS CA.
func tlsPinAfterRotation(t *testing.T, c *cluster) string {
	t.Helper()
	status := c.rotate(t, "--status").stdout
	if !strings.Contains(status, "spec.ca_pin of this cluster's leaf_cluster on its roots") {
		t.Errorf("rotate --status does not tell what to change in trusted clusters:\n%s", status)
	}
	for line := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(line, "CA pin after the TLS rotation:"); ok {
			if pin := strings.TrimSpace(rest); pin != c.pin {
				return pin
			}
		}
	}
	t.Fatalf("rotate --status does not show the new CA pin:\n%s", status)
	return ""
}

// waitServingCA waits until c, idle, has read the rotation step from its
// store and serves a certificate of the CA of pin.
func waitServingCA(t *testing.T, c *cluster, caFile, pin string) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got, err = servingCA(t, c, caFile); err == nil && got == pin {
			return
		}
	}
	t.Fatalf("%s serves a certificate of %s (%v), want %s", c.url, got, err, pin)
}

// waitForLog waits until b's log has a line holding every one of parts.
func waitForLog(t *testing.T, b *background, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for line := range strings.Lines(b.logs.String()) {
			found := true
			for _, p := range parts {
				found = found && strings.Contains(line, p)
			}
			if found {
				return
			}
		}
	}
	t.Fatalf("no log line holds %q:\n%s", parts, b.logs)
}
