//go:build linux

package kubesecret_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/client/kubesecret"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// rbac is what the mbot-agent chart renders for Secret out (get and
// update on it by name), for service account writer; reader has get only,
// creator also create.
const rbac = `apiVersion: v1
kind: Namespace
metadata: {name: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: writer, namespace: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: ci}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: creator, namespace: ci}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: writer, namespace: ci}
rules:
- {apiGroups: [""], resources: [secrets], resourceNames: [out, tls-out], verbs: [get, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: writer, namespace: ci}
subjects: [{kind: ServiceAccount, name: writer, namespace: ci}]
roleRef: {kind: Role, name: writer, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: ci}
rules:
- {apiGroups: [""], resources: [secrets], resourceNames: [out], verbs: [get]}
- {apiGroups: [""], resources: [secrets], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: ci}
subjects: [{kind: ServiceAccount, name: reader, namespace: ci}]
roleRef: {kind: Role, name: reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: creator, namespace: ci}
rules:
- {apiGroups: [""], resources: [secrets], resourceNames: [made], verbs: [get, update]}
- {apiGroups: [""], resources: [secrets], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: creator, namespace: ci}
subjects: [{kind: ServiceAccount, name: creator, namespace: ci}]
roleRef: {kind: Role, name: creator, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: v1
kind: Secret
metadata: {name: out, namespace: ci}
type: Opaque
---
apiVersion: v1
kind: Secret
metadata: {name: tls-out, namespace: ci}
type: Opaque
`

func TestWriteSecretReal(t *testing.T) {
	k := testservers.StartKubeAPIServer(t, testservers.KubeConfig{})
	k.Admin(t, rbac, "apply", "-f", "-")
	ctx := context.Background()
	clientFor := func(t *testing.T, sa string) *kubesecret.Client {
		t.Helper()
		tok := strings.TrimSpace(k.Admin(t, "", "create", "token", sa, "--namespace", "ci"))
		cfg, err := kubesecret.FromKubeconfig(k.TokenKubeconfig(t, sa, tok, "ci"))
		if err != nil {
			t.Fatal(err)
		}
		return kubesecret.New(cfg)
	}
	get := func(t *testing.T, name, path string) string {
		t.Helper()
		return k.Admin(t, "", "get", "secret", name, "--namespace", "ci", "-o", "jsonpath="+path)
	}
	ref := kubesecret.Ref{Namespace: "ci", Name: "out", Labels: map[string]string{"team": "payments"}, Role: "Role ci/writer"}

	t.Run("write, then update in place", func(t *testing.T) {
		c := clientFor(t, "writer")
		if err := c.Check(ctx, ref, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(ctx, ref, kubesecret.TypeOpaque, map[string][]byte{"client.crt": []byte("one")}); err != nil {
			t.Fatal(err)
		}
		uid, rv := get(t, "out", "{.metadata.uid}"), get(t, "out", "{.metadata.resourceVersion}")
		res, err := c.Write(ctx, ref, kubesecret.TypeOpaque, map[string][]byte{"client.crt": []byte("two"), "client.key": []byte("k")})
		if err != nil || res.Created {
			t.Fatalf("second write: %+v, %v", res, err)
		}
		if got := get(t, "out", "{.metadata.uid}"); got != uid {
			t.Errorf("the Secret was replaced (uid %s, was %s), not updated", got, uid)
		}
		if got := get(t, "out", "{.metadata.resourceVersion}"); got == rv {
			t.Error("resourceVersion did not change")
		}
		if got := get(t, "out", `{.data.client\.crt}`); got != "dHdv" { // base64 "two"
			t.Errorf("client.crt = %s, want two", got)
		}
		if got := get(t, "out", `{.metadata.labels}`); !strings.Contains(got, `"team":"payments"`) || !strings.Contains(got, `"app.kubernetes.io/managed-by":"mbot"`) {
			t.Errorf("labels = %s", got)
		}
	})

	t.Run("conflict retried", func(t *testing.T) {
		c := clientFor(t, "writer")
		changes := 0
		c.BeforeWrite = func() {
			if changes < 2 { // another writer changes the Secret between the read and the write, twice
				changes++
				k.Admin(t, "", "annotate", "secret", "out", "--namespace", "ci", "--overwrite", "other=x"+strings.Repeat("y", changes))
			}
		}
		res, err := c.Write(ctx, ref, kubesecret.TypeOpaque, map[string][]byte{"client.crt": []byte("three")})
		if err != nil {
			t.Fatal(err)
		}
		if res.Conflicts != 2 {
			t.Errorf("conflicts = %d, want 2", res.Conflicts)
		}
		if got := get(t, "out", `{.data.client\.crt}`); got != "dGhyZWU=" {
			t.Errorf("client.crt = %s, want three", got)
		}
		if got := get(t, "out", `{.metadata.annotations.other}`); got != "xyy" {
			t.Errorf("the other writer's annotation = %q, want it kept", got)
		}
	})

	t.Run("no update: named refusal, Secret intact", func(t *testing.T) {
		c := clientFor(t, "reader")
		before := get(t, "out", "{.metadata.resourceVersion}")
		err := c.Check(ctx, ref, "")
		var pe *kubesecret.PermissionError
		if !errors.As(err, &pe) || pe.Verb != "update" {
			t.Fatalf("Check = %v, want a refusal of update", err)
		}
		for _, want := range []string{`may not update it`, `add verb "update" on secrets with resourceNames: ["out"] to Role ci/writer`, "system:serviceaccount:ci:reader"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal does not say %q: %v", want, err)
			}
		}
		_, err = c.Write(ctx, ref, kubesecret.TypeOpaque, map[string][]byte{"client.crt": []byte("bad")})
		if !errors.As(err, &pe) || pe.Verb != "update" {
			t.Fatalf("Write = %v, want a refusal of update", err)
		}
		if after := get(t, "out", "{.metadata.resourceVersion}"); after != before {
			t.Errorf("resourceVersion %s -> %s: the Secret changed", before, after)
		}
		if got := get(t, "out", `{.data.client\.crt}`); got != "dGhyZWU=" {
			t.Errorf("client.crt = %s, want three, as before", got)
		}
	})

	t.Run("missing Secret without create", func(t *testing.T) {
		c := clientFor(t, "writer")
		err := c.Check(ctx, kubesecret.Ref{Namespace: "ci", Name: "tls-outx", Role: "Role ci/writer"}, "")
		var pe *kubesecret.PermissionError
		if !errors.As(err, &pe) || pe.Verb != "get" {
			t.Fatalf("Check of a Secret the Role does not name = %v, want a refusal of get", err)
		}
	})

	t.Run("create, with type kubernetes.io/tls", func(t *testing.T) {
		c := clientFor(t, "creator")
		r := kubesecret.Ref{Namespace: "ci", Name: "made"}
		if err := c.Check(ctx, r, ""); err != nil {
			t.Fatal(err)
		}
		res, err := c.Write(ctx, r, kubesecret.TypeTLS, map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k"), "ca.crt": []byte("a")})
		if err != nil || !res.Created {
			t.Fatalf("create: %+v, %v", res, err)
		}
		if got := get(t, "made", "{.type}"); got != kubesecret.TypeTLS {
			t.Errorf("type = %s", got)
		}
	})

	t.Run("a Secret mbot did not write is refused", func(t *testing.T) {
		k.Admin(t, "", "create", "secret", "generic", "foreign", "--namespace", "ci", "--from-literal=password=hunter2")
		k.Admin(t, "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: foreign, namespace: ci}\nrules:\n- {apiGroups: [\"\"], resources: [secrets], resourceNames: [foreign], verbs: [get, update]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: foreign, namespace: ci}\nsubjects: [{kind: ServiceAccount, name: writer, namespace: ci}]\nroleRef: {kind: Role, name: foreign, apiGroup: rbac.authorization.k8s.io}\n", "apply", "-f", "-")
		c := clientFor(t, "writer")
		err := c.Check(ctx, kubesecret.Ref{Namespace: "ci", Name: "foreign"}, "")
		if err == nil || !strings.Contains(err.Error(), "mbot did not write it") {
			t.Fatalf("Check = %v", err)
		}
	})

	t.Run("in-cluster config", func(t *testing.T) {
		dir := t.TempDir()
		tok := strings.TrimSpace(k.Admin(t, "", "create", "token", "writer", "--namespace", "ci"))
		for name, data := range map[string]string{"token": tok + "\n", "ca.crt": string(k.CAPEM), "namespace": "ci"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		kubesecret.InClusterTokenFile, kubesecret.InClusterCAFile, kubesecret.InClusterNamespaceFile =
			filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt"), filepath.Join(dir, "namespace")
		host, port, _ := strings.Cut(strings.TrimPrefix(k.URL, "https://"), ":")
		env := map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
		cfg, err := kubesecret.Load(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Namespace != "ci" || cfg.Source != "the pod's service account" {
			t.Errorf("config: namespace %q, source %q", cfg.Namespace, cfg.Source)
		}
		r := ref
		r.Namespace = cfg.Namespace
		if _, err := kubesecret.New(cfg).Write(ctx, r, kubesecret.TypeOpaque, map[string][]byte{"client.crt": []byte("pod")}); err != nil {
			t.Fatal(err)
		}
		if got := get(t, "out", `{.data.client\.crt}`); got != "cG9k" {
			t.Errorf("client.crt = %s, want pod", got)
		}
	})
}
