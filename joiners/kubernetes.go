package joiners

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// KubernetesTokenPathEnv names the projected service account token to read.
const KubernetesTokenPathEnv = "MBOT_KUBERNETES_TOKEN_PATH"

// kubernetesTokenPaths are where a pod's token is looked for when
// MBOT_KUBERNETES_TOKEN_PATH is unset: a projected token mounted for mbot,
// then the token every pod gets, which is usually minted for the API
// server's audience and then refused with a hint to mount the first.
var kubernetesTokenPaths = []string{
	"/var/run/secrets/tokens/mbot",
	"/var/run/secrets/kubernetes.io/serviceaccount/token",
}

// kubernetes reads the pod's projected service account token, which the
// kubelet mints for the audience named in the pod's volume and refreshes.
type kubernetes struct{}

func init() { register(kubernetes{}, priorityKubernetes) }

func (kubernetes) Method() string { return "kubernetes" }

func (kubernetes) Signals() string {
	return "KUBERNETES_SERVICE_HOST and a service account token"
}

// Detect wants both: KUBERNETES_SERVICE_HOST alone is set in every pod,
// also those that mount no token (automountServiceAccountToken: false).
func (kubernetes) Detect(env Env) bool {
	if env("KUBERNETES_SERVICE_HOST") == "" {
		return false
	}
	for _, path := range kubernetesCandidates(env) {
		if f, err := os.Open(path); err == nil {
			f.Close()
			return true
		}
	}
	return false
}

func kubernetesCandidates(env Env) []string {
	if path := env(KubernetesTokenPathEnv); path != "" {
		return []string{path}
	}
	return kubernetesTokenPaths
}

func (kubernetes) Proof(_ context.Context, env Env, audience string) (string, error) {
	var tried []string
	for _, path := range kubernetesCandidates(env) {
		tok, err := readTokenFile(path)
		if os.IsNotExist(err) {
			tried = append(tried, path)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading the service account token %s: %w", path, err)
		}
		if tok == "" {
			return "", fmt.Errorf("the service account token file %s is empty", path)
		}
		// Checked here only to say how to fix it; the authority decides.
		if aud := unverifiedAudience(tok); aud != nil && audience != "" && !slices.Contains(aud, audience) {
			return "", fmt.Errorf("the service account token %s is for audience %s, not the authority's %q: %s",
				path, strings.Join(aud, ","), audience, kubernetesVolumeHint(audience))
		}
		return tok, nil
	}
	return "", fmt.Errorf("no service account token at %s: %s", strings.Join(tried, " or "), kubernetesVolumeHint(audience))
}

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	return strings.TrimSpace(string(data)), err
}

// kubernetesVolumeHint is the pod spec that gives mbot its token.
func kubernetesVolumeHint(audience string) string {
	return fmt.Sprintf(`mount a projected token for the authority in the pod:
  volumes:
    - name: mbot-token
      projected:
        sources:
          - serviceAccountToken: {path: mbot, audience: %q, expirationSeconds: 600}
  (and volumeMounts: [{name: mbot-token, mountPath: /var/run/secrets/tokens}] in the container), or set %s`,
		audience, KubernetesTokenPathEnv)
}

// unverifiedAudience reads aud from a JWT without checking it, for a
// message; nil when the token cannot be read.
func unverifiedAudience(token string) []string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c struct {
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(payload, &c) != nil || len(c.Aud) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	if json.Unmarshal(c.Aud, &many) == nil {
		return many
	}
	return nil
}
