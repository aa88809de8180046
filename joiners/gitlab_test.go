package joiners_test

import (
	"strings"
	"testing"
)

func TestGitLabProof(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"default variable", map[string]string{"GITLAB_CI": "true", "MBOT_ID_TOKEN": "jwt-default"}, "jwt-default"},
		{"MBOT_ID_TOKEN_VAR names another variable",
			map[string]string{"GITLAB_CI": "true", "MBOT_ID_TOKEN_VAR": "DEPLOY_ID_TOKEN",
				"DEPLOY_ID_TOKEN": "jwt-deploy", "MBOT_ID_TOKEN": "jwt-default"}, "jwt-deploy"},
		{"empty MBOT_ID_TOKEN_VAR means the default",
			map[string]string{"GITLAB_CI": "true", "MBOT_ID_TOKEN_VAR": "", "MBOT_ID_TOKEN": "jwt-default"}, "jwt-default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proof(t, "gitlab", tc.env, "acme")
			if err != nil {
				t.Fatalf("Proof: %v", err)
			}
			if got != tc.want {
				t.Errorf("Proof = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGitLabProofMissing(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no id_tokens variable", map[string]string{"GITLAB_CI": "true"},
			[]string{"no MBOT_ID_TOKEN variable", "id_tokens:\n    MBOT_ID_TOKEN:\n      aud: acme.example\n", "MBOT_ID_TOKEN_VAR"}},
		{"the named variable is unset", map[string]string{"GITLAB_CI": "true", "MBOT_ID_TOKEN_VAR": "DEPLOY_ID_TOKEN", "MBOT_ID_TOKEN": "jwt-default"},
			[]string{"no DEPLOY_ID_TOKEN variable", "id_tokens:\n    DEPLOY_ID_TOKEN:\n      aud: acme.example\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := proof(t, "gitlab", tc.env, "acme.example")
			if err == nil {
				t.Fatalf("Proof = %q, want an error", got)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
