package joiners_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"github.com/mbot-dev/mbot/joiners"
)

// podToken writes a projected service account token for aud, as the
// kubelet does, and returns its path.
func podToken(t *testing.T, aud any) string {
	t.Helper()
	iss, err := simci.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	claims := simci.KubernetesClaims()
	claims["aud"] = aud
	tok, err := iss.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mbot")
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKubernetesDetect(t *testing.T) {
	token := podToken(t, "acme")
	inPod := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
	cases := []struct {
		name  string
		env   map[string]string
		paths []string // the default token paths
		want  string   // "" for nothing detected
	}{
		{"projected token at the default path", inPod, []string{token, "/nonexistent"}, "kubernetes"},
		{"only the service account token every pod gets", inPod, []string{"/nonexistent", token}, "kubernetes"},
		{"MBOT_KUBERNETES_TOKEN_PATH", merge(inPod, map[string]string{"MBOT_KUBERNETES_TOKEN_PATH": token}), nil, "kubernetes"},
		{"MBOT_KUBERNETES_TOKEN_PATH names no file", merge(inPod, map[string]string{"MBOT_KUBERNETES_TOKEN_PATH": "/nonexistent"}), []string{token}, ""},
		{"pod without a token (automountServiceAccountToken: false)", inPod, nil, ""},
		{"a token file outside a pod", nil, []string{token}, ""},
		{"GitLab runner's job pod", merge(gitlabEnv, inPod), []string{token}, "gitlab"},
		{"pod on EKS with IRSA credentials", merge(inPod, map[string]string{"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
			[]string{token}, "kubernetes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer joiners.SetKubernetesTokenPaths(tc.paths...)()
			j, err := joiners.Detect(envOf(tc.env))
			switch {
			case tc.want == "" && err == nil:
				t.Errorf("Detect picked %s", j.Method())
			case tc.want == "" && !strings.Contains(strings.Join(joiners.DetectionSignals(), ", "), "kubernetes (KUBERNETES_SERVICE_HOST and a service account token)"):
				t.Errorf("error %q does not say what kubernetes looks for", err)
			case tc.want != "" && (err != nil || j.Method() != tc.want):
				t.Errorf("Detect: %v, %v; want %s", j, err, tc.want)
			}
		})
	}
}

func TestKubernetesProof(t *testing.T) {
	projected := podToken(t, "acme")
	other := podToken(t, []string{"https://kubernetes.default.svc.cluster.local", "k3s"})
	want, err := os.ReadFile(projected)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the projected token first", func(t *testing.T) {
		defer joiners.SetKubernetesTokenPaths(projected, other)()
		tok, err := proof(t, "kubernetes", nil, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if tok != strings.TrimSpace(string(want)) {
			t.Errorf("proof %q is not the projected token", tok)
		}
	})
	t.Run("MBOT_KUBERNETES_TOKEN_PATH", func(t *testing.T) {
		defer joiners.SetKubernetesTokenPaths(other)()
		tok, err := proof(t, "kubernetes", map[string]string{"MBOT_KUBERNETES_TOKEN_PATH": projected}, "acme")
		if err != nil || tok != strings.TrimSpace(string(want)) {
			t.Errorf("proof %q, %v; want the token MBOT_KUBERNETES_TOKEN_PATH names", tok, err)
		}
	})
	t.Run("the default token is for the API server", func(t *testing.T) {
		defer joiners.SetKubernetesTokenPaths("/nonexistent", other)()
		_, err := proof(t, "kubernetes", nil, "acme")
		for _, w := range []string{"https://kubernetes.default.svc.cluster.local,k3s", `not the authority's "acme"`, "serviceAccountToken", `audience: "acme"`} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("err = %v, want one containing %q", err, w)
			}
		}
	})
	t.Run("no token", func(t *testing.T) {
		defer joiners.SetKubernetesTokenPaths("/nonexistent/a", "/nonexistent/b")()
		_, err := proof(t, "kubernetes", nil, "acme")
		for _, w := range []string{"/nonexistent/a or /nonexistent/b", "expirationSeconds", "MBOT_KUBERNETES_TOKEN_PATH"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("err = %v, want one containing %q", err, w)
			}
		}
	})
	t.Run("empty file", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := proof(t, "kubernetes", map[string]string{"MBOT_KUBERNETES_TOKEN_PATH": empty}, "acme")
		if err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Errorf("err = %v, want one saying the file is empty", err)
		}
	})
	t.Run("unreadable file", func(t *testing.T) {
		if os.Geteuid() == 0 {
			skipreport.Skip(t, "root reads every file")
		}
		locked := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(locked, []byte("x.y.z"), 0o000); err != nil {
			t.Fatal(err)
		}
		_, err := proof(t, "kubernetes", map[string]string{"MBOT_KUBERNETES_TOKEN_PATH": locked}, "acme")
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("err = %v, want permission denied", err)
		}
	})
}
