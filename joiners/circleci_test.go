package joiners_test

import (
	"strings"
	"testing"
)

func TestCircleCIProof(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"V2 preferred over V1", map[string]string{"CIRCLECI": "true", "CIRCLE_OIDC_TOKEN_V2": "jwt-v2", "CIRCLE_OIDC_TOKEN": "jwt-v1"}, "jwt-v2"},
		{"V1 when V2 is absent", map[string]string{"CIRCLECI": "true", "CIRCLE_OIDC_TOKEN": "jwt-v1"}, "jwt-v1"},
		{"V1 when V2 is empty", map[string]string{"CIRCLECI": "true", "CIRCLE_OIDC_TOKEN_V2": "", "CIRCLE_OIDC_TOKEN": "jwt-v1"}, "jwt-v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// CircleCI mints its tokens before the job starts; the audience is ignored.
			got, err := proof(t, "circleci", tc.env, "ignored")
			if err != nil {
				t.Fatalf("Proof: %v", err)
			}
			if got != tc.want {
				t.Errorf("Proof = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCircleCIProofMissing(t *testing.T) {
	got, err := proof(t, "circleci", map[string]string{"CIRCLECI": "true"}, "acme")
	if err == nil {
		t.Fatalf("Proof = %q, want an error", got)
	}
	for _, want := range []string{"CIRCLE_OIDC_TOKEN_V2", "CIRCLE_OIDC_TOKEN", "context"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
