// Package joiners is the client half of each join method: it recognises the
// platform a job runs on from its environment and fetches the platform's
// identity proof. Each platform is one file; the authority's half lives in
// authority/verify under the same name.
package joiners

import (
	"context"
	"fmt"
	"net/http"
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

// detectionOrder is the order of SPEC §4: CI platforms first, then the
// clouds, because a CI job often also runs on a cloud VM.
var detectionOrder = []Joiner{gitHub{}, gitLab{}, circleCI{}}

// Detect picks the joiner for the platform the job runs on.
func Detect(env Env) (Joiner, error) {
	for _, j := range detectionOrder {
		if j.Detect(env) {
			return j, nil
		}
	}
	var looked []string
	for _, j := range detectionOrder {
		looked = append(looked, fmt.Sprintf("%s (%s)", j.Method(), j.Signals()))
	}
	return nil, fmt.Errorf("could not detect the CI platform; looked for %s. Run inside one of them or pass --join-method",
		strings.Join(looked, ", "))
}

// ByMethod returns the joiner for a join method name.
func ByMethod(name string) (Joiner, error) {
	for _, j := range detectionOrder {
		if j.Method() == name {
			return j, nil
		}
	}
	return nil, fmt.Errorf("unknown join method %q; use auto or one of: %s", name, strings.Join(Methods(), ", "))
}

// Methods lists the join methods this client can use.
func Methods() []string {
	var names []string
	for _, j := range detectionOrder {
		names = append(names, j.Method())
	}
	sort.Strings(names)
	return names
}

// httpClient fetches proofs from platform endpoints.
var httpClient = &http.Client{Timeout: 15 * time.Second}
