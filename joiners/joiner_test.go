package joiners_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/joiners"
)

// envOf is a job environment made of vars; unset names read as "".
func envOf(vars map[string]string) joiners.Env {
	return func(name string) string { return vars[name] }
}

// Environments as each platform sets them (the variables Detect may see).
var (
	githubEnv = map[string]string{
		"CI":                             "true",
		"GITHUB_ACTIONS":                 "true",
		"GITHUB_REPOSITORY":              "acme/app",
		"ACTIONS_ID_TOKEN_REQUEST_URL":   "https://pipelines.actions.githubusercontent.com/abc/idtoken?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
	}
	gitlabEnv = map[string]string{
		"CI":                "true",
		"GITLAB_CI":         "true",
		"CI_PROJECT_PATH":   "acme/app",
		"MBOT_ID_TOKEN":     "gitlab-jwt",
		"CI_SERVER_VERSION": "17.0.0",
	}
	circleciEnv = map[string]string{
		"CI":                   "true",
		"CIRCLECI":             "true",
		"CIRCLE_PROJECT_ID":    "8f2b3c4d-0000-4000-8000-000000000002",
		"CIRCLE_OIDC_TOKEN_V2": "circleci-jwt-v2",
	}
	awsEnv = map[string]string{
		"AWS_ACCESS_KEY_ID":     "AKIAIOSFODNN7EXAMPLE",
		"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"AWS_REGION":            "eu-west-1",
	}
)

func merge(envs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, e := range envs {
		for k, v := range e {
			out[k] = v
		}
	}
	return out
}

func TestDetect(t *testing.T) {
	tests := []detectCase{
		{"GitHub Actions", githubEnv, "github"},
		{"GitLab CI", gitlabEnv, "gitlab"},
		{"CircleCI", circleciEnv, "circleci"},
		{"GitLab without its id_tokens variable is still GitLab", map[string]string{"GITLAB_CI": "true"}, "gitlab"},
		// Documented order (SPEC §4): GitHub, GitLab, CircleCI, ..., then the clouds.
		{"GitHub Actions with CIRCLECI=true", merge(githubEnv, map[string]string{"CIRCLECI": "true"}), "github"},
		{"GitHub Actions with GITLAB_CI=true", merge(githubEnv, map[string]string{"GITLAB_CI": "true"}), "github"},
		{"GitLab CI with CIRCLECI=true", merge(gitlabEnv, map[string]string{"CIRCLECI": "true"}), "gitlab"},
		{"GitHub runner on AWS with credentials", merge(githubEnv, awsEnv), "github"},
		{"CircleCI on AWS with credentials", merge(circleciEnv, awsEnv), "circleci"},
	}
	runDetectCases(t, tests)
}

func TestDetectNothing(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"empty environment": {},
		// Only the exact value "true" counts, as the platforms set it.
		"signals not true": {"GITHUB_ACTIONS": "false", "GITLAB_CI": "", "CIRCLECI": "1"},
	} {
		t.Run(name, func(t *testing.T) {
			j, err := joiners.Detect(envOf(env))
			if err == nil {
				t.Fatalf("Detect picked %s in an environment of no CI platform", j.Method())
			}
			for _, want := range []string{
				"github, gitlab, circleci",
				"mbot demo",
				"--join-method token",
				"--join-method <method>",
			} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			// A short multi-line message, not one long line.
			lines := strings.Split(err.Error(), "\n")
			// The list of methods is most of it, and grows with them.
			if len(lines) < 3 || len(err.Error()) > 500 {
				t.Errorf("error is %d lines, %d characters; want a few short lines:\n%s", len(lines), len(err.Error()), err)
			}
			for _, l := range lines {
				if len(l) > 200 {
					t.Errorf("line of %d characters: %q", len(l), l)
				}
			}
		})
	}
}

func TestByMethod(t *testing.T) {
	for _, name := range []string{"github", "gitlab", "circleci"} {
		j, err := joiners.ByMethod(name)
		if err != nil {
			t.Errorf("ByMethod(%q): %v", name, err)
			continue
		}
		if j.Method() != name {
			t.Errorf("ByMethod(%q) returned the %s joiner", name, j.Method())
		}
	}
	for _, name := range []string{"travis", "GitHub", "", "auto"} {
		j, err := joiners.ByMethod(name)
		if err == nil {
			t.Errorf("ByMethod(%q) returned the %s joiner, want an error", name, j.Method())
			continue
		}
		for _, want := range []string{`"` + name + `"`, "auto", "circleci", "github", "gitlab", "gcp", "azure", "kubernetes"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ByMethod(%q) error %q does not mention %q", name, err, want)
			}
		}
	}
}

func TestMethods(t *testing.T) {
	got := joiners.Methods()
	if !slices.IsSorted(got) {
		t.Errorf("Methods() = %s, not sorted", got)
	}
	for _, m := range []string{"circleci", "github", "gitlab", "iam", "token"} {
		if !slices.Contains(got, m) {
			t.Errorf("Methods() = %s, lacks %s", got, m)
		}
	}
}

// proof runs method's joiner in env for audience.
func proof(t *testing.T, method string, env map[string]string, audience string) (string, error) {
	t.Helper()
	j, err := joiners.ByMethod(method)
	if err != nil {
		t.Fatal(err)
	}
	return j.Proof(context.Background(), envOf(env), audience)
}

// detectIn names the joiner Detect picks in env.
func detectIn(env map[string]string) (string, error) {
	j, err := joiners.Detect(envOf(env))
	if err != nil {
		return "", err
	}
	return j.Method(), nil
}

// detectCase is a job environment and the joiner Detect must pick for it.
type detectCase struct {
	name string
	env  map[string]string
	want string
}

func runDetectCases(t *testing.T, cases []detectCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, err := joiners.Detect(envOf(tc.env))
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if j.Method() != tc.want {
				t.Errorf("Detect picked %s, want %s", j.Method(), tc.want)
			}
		})
	}
}
