// Package joiners is the client half of each join method: it recognises the
// platform a job runs on from its environment and fetches the platform's
// identity proof. Each platform is one file; the authority's half lives in
// authority/verify under the same name.
package joiners

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// Env looks up an environment variable of the job (os.Getenv in production).
type Env func(string) string

// Joiner fetches one platform's proof of identity.
type Joiner interface {
	// Method is the join method name, as in a join token's spec.method.
	Method() string
	// Detect reports whether the job runs on this platform.
	Detect(env Env) bool
	// Signals lists the environment variables Detect looks at, for messages.
	Signals() string
	// Proof returns the platform's identity proof for audience (platforms
	// that mint their tokens before the job starts ignore audience).
	Proof(ctx context.Context, env Env, audience string) (string, error)
}

// Detection priorities, in the order of SPEC §4: CI platforms first, then
// Kubernetes, then the clouds, because a CI job often also runs on a cloud VM.
// Forgejo comes before GitHub: its runner sets GITHUB_ACTIONS=true too.
// Jenkins comes last of the CI platforms: its agents often run inside
// others' environments (Kubernetes pods, cloud VMs) and only JENKINS_URL
// says so. Cloud Build and CodeBuild come before the generic cloud
// detection, which would otherwise pick gcp or iam without naming them.
const (
	priorityForgejo = 10 * (iota + 1)
	priorityGitHub
	priorityGitLab
	priorityCircleCI
	prioritySpacelift
	priorityTerraformCloud
	priorityBitbucket
	priorityBuildkite
	priorityAzureDevOps
	priorityEnv0
	prioritySemaphore
	priorityCodefresh
	priorityJenkins
	priorityCloudBuild
	priorityCodeBuild
	priorityKubernetes
	priorityAWS
	priorityGCP
	priorityAzure
)

// CIPlatformJoiner is a joiner for a CI platform whose jobs prove who they
// are with a cloud's join method (Cloud Build with gcp, CodeBuild with
// iam): Method is the cloud's, CIPlatform names the CI platform for the
// messages and the authority's audit record.
type CIPlatformJoiner interface {
	Joiner
	CIPlatform() string
}

// CIPlatform is the CI platform j names, "" for a joiner whose method is
// the platform's own.
func CIPlatform(j Joiner) string {
	if c, ok := j.(CIPlatformJoiner); ok {
		return c.CIPlatform()
	}
	return ""
}

// detectionOrder lists the joiners by priority; each platform file adds
// itself with register.
var detectionOrder []Joiner

var priorities = map[Joiner]int{}

// register adds a joiner to auto-detection at the given priority (lower
// is tried first). Joiners that cannot be detected (token, oidc) register
// with priority 0 and are only used by --join-method.
func register(j Joiner, priority int) {
	priorities[j] = priority
	// After every joiner of the same or a lower priority: the order a
	// stable sort would give, without sorting on each of the package's
	// initializers.
	i := len(detectionOrder)
	for i > 0 && priorities[detectionOrder[i-1]] > priority {
		i--
	}
	detectionOrder = slices.Insert(detectionOrder, i, j)
}

// Detect picks the joiner for the platform the job runs on.
func Detect(env Env) (Joiner, error) {
	for _, j := range detectionOrder {
		if priorities[j] > 0 && j.Detect(env) {
			return j, nil
		}
	}
	var looked []string
	for _, j := range detectionOrder {
		if priorities[j] > 0 && CIPlatform(j) == "" {
			looked = append(looked, j.Method())
		}
	}
	// Several short lines: the usual reader is a person on a laptop.
	return nil, fmt.Errorf("no CI platform detected (mbot issue --help lists the signals); looked for\n  %s\n"+
		"  Try mbot on this machine:  mbot demo\n"+
		"  Join without a platform:   --join-method token with %s set\n"+
		"  In a CI job not detected:  --join-method <method>",
		strings.Join(looked, ", "), JoinSecretEnv)
}

// DetectionSignals lists, in detection order, each detected method with the
// signals it is detected by, "github (GITHUB_ACTIONS=true)": mbot issue --help
// prints them.
func DetectionSignals() []string {
	var out []string
	for _, j := range detectionOrder {
		switch {
		case priorities[j] == 0:
		case CIPlatform(j) != "":
			out = append(out, fmt.Sprintf("%s on %s (%s)", j.Method(), CIPlatform(j), j.Signals()))
		default:
			out = append(out, fmt.Sprintf("%s (%s)", j.Method(), j.Signals()))
		}
	}
	return out
}

// ByMethod returns the joiner for a join method name (the cloud's own
// joiner for gcp and iam, not the CI platforms that join with them).
func ByMethod(name string) (Joiner, error) {
	for _, j := range detectionOrder {
		if j.Method() == name && CIPlatform(j) == "" {
			return j, nil
		}
	}
	return nil, fmt.Errorf("unknown join method %q; use auto or one of: %s", name, strings.Join(Methods(), ", "))
}

// Methods lists the join methods this client can use.
func Methods() []string {
	var names []string
	for _, j := range detectionOrder {
		if CIPlatform(j) == "" {
			names = append(names, j.Method())
		}
	}
	sort.Strings(names)
	return names
}

// httpClient fetches proofs from platform endpoints.
var httpClient = &http.Client{Timeout: 15 * time.Second}
