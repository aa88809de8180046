package joiners_test

import (
	"strings"
	"testing"
)

var jenkinsEnv = map[string]string{
	"JENKINS_URL":  "https://jenkins.acme.internal/",
	"BUILD_TAG":    "jenkins-infra-deploy-42",
	"BUILD_NUMBER": "42",
	"JOB_NAME":     "infra/deploy",
}

func TestJenkinsDetect(t *testing.T) {
	runDetectCases(t, []detectCase{
		{"Jenkins", jenkinsEnv, "jenkins"},
		{"a Jenkins agent on AWS", merge(jenkinsEnv, awsEnv), "jenkins"},
		{"a Jenkins agent in a GitLab job is GitLab's", merge(jenkinsEnv, gitlabEnv), "gitlab"},
	})
	// JENKINS_URL alone is set by tools that talk to a Jenkins.
	if j, err := detectIn(map[string]string{"JENKINS_URL": "https://jenkins.acme.internal/"}); err == nil {
		t.Errorf("JENKINS_URL without BUILD_TAG detected as %s", j)
	}
}

func TestJenkinsProof(t *testing.T) {
	got, err := proof(t, "jenkins", merge(jenkinsEnv, map[string]string{"MBOT_ID_TOKEN": "jenkins-jwt\n"}), "acme")
	if err != nil || got != "jenkins-jwt" {
		t.Errorf("Proof = %q, %v", got, err)
	}
	got, err = proof(t, "jenkins", merge(jenkinsEnv, map[string]string{"MBOT_ID_TOKEN_VAR": "DEPLOY_ID_TOKEN", "DEPLOY_ID_TOKEN": "deploy-jwt"}), "acme")
	if err != nil || got != "deploy-jwt" {
		t.Errorf("Proof with MBOT_ID_TOKEN_VAR = %q, %v", got, err)
	}
	// Without the plugin's token: both ways out.
	_, err = proof(t, "jenkins", jenkinsEnv, "acme")
	if err == nil {
		t.Fatal("no error without a token")
	}
	for _, want := range []string{"no MBOT_ID_TOKEN variable", "OpenID Connect Provider plugin", "audience acme",
		"variable: 'MBOT_ID_TOKEN'", "MBOT_ID_TOKEN_VAR", "mbot start --join-method bound_keypair"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%s", want, err)
		}
	}
}
