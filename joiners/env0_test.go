package joiners_test

import (
	"strings"
	"testing"
)

func TestEnv0AndSemaphoreProof(t *testing.T) {
	env0 := map[string]string{"ENV0_ENVIRONMENT_ID": "7e6d5c4b-0000-4000-8000-0000000000e3", "ENV0_OIDC_TOKEN": "env0-jwt"}
	semaphore := map[string]string{"CI": "true", "SEMAPHORE": "true", "SEMAPHORE_OIDC_TOKEN": "semaphore-jwt"}
	runDetectCases(t, []detectCase{
		{"env0", env0, "env0"},
		{"env0 on AWS", merge(env0, awsEnv), "env0"},
		{"Semaphore", semaphore, "semaphore"},
	})
	for _, tc := range []struct {
		method string
		env    map[string]string
		want   string
		unset  string
		hint   string
	}{
		{"env0", env0, "env0-jwt", "ENV0_OIDC_TOKEN", "Enable OIDC during deployments"},
		{"semaphore", semaphore, "semaphore-jwt", "SEMAPHORE_OIDC_TOKEN", "OpenID Connect"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			if got, err := proof(t, tc.method, tc.env, "acme"); err != nil || got != tc.want {
				t.Errorf("Proof = %q, %v; want %s", got, err, tc.want)
			}
			env := merge(tc.env)
			delete(env, tc.unset)
			_, err := proof(t, tc.method, env, "acme")
			if err == nil || !strings.Contains(err.Error(), tc.unset) || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("without %s: error %v, want it named with %q", tc.unset, err, tc.hint)
			}
		})
	}
}
