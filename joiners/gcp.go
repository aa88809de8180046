package joiners

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
)

// gcpMetadataTimeout bounds the identity request, retries included; off
// GCP the metadata server's address does not answer at all.
var gcpMetadataTimeout = 30 * time.Second

// gcpProductNamePath is where Linux shows the machine's DMI product name,
// which is "Google Compute Engine" on GCE instances and GKE nodes.
var gcpProductNamePath = "/sys/class/dmi/id/product_name"

// gcp asks the metadata server of a GCE instance (or the GKE metadata server
// of a Workload Identity pod) for an ID token of the instance's service
// account, in the full format that names the project, zone and instance.
type gcp struct{}

func init() { register(gcp{}, priorityGCP) }

func (gcp) Method() string { return "gcp" }

func (gcp) Signals() string { return "GCE_METADATA_HOST or a Google Compute Engine machine" }

// Detect does not ask the metadata server, as metadata.OnGCE does: off GCP
// that waits for a connection timeout on every run. It looks at
// GCE_METADATA_HOST and at the DMI product name, which costs one file read.
func (gcp) Detect(env Env) bool {
	if env("GCE_METADATA_HOST") != "" {
		return true
	}
	name, err := os.ReadFile(gcpProductNamePath)
	return err == nil && strings.Contains(string(name), "Google")
}

func (gcp) Proof(ctx context.Context, _ Env, audience string) (string, error) {
	if audience == "" {
		return "", errors.New("the authority announced no audience to request the GCP identity token for")
	}
	ctx, cancel := context.WithTimeout(ctx, gcpMetadataTimeout)
	defer cancel()
	// The client honours GCE_METADATA_HOST (the metadata server emulator, tests).
	tok, err := metadata.NewClient(nil).GetWithContext(ctx,
		"instance/service-accounts/default/identity?audience="+url.QueryEscape(audience)+"&format=full")
	if err != nil {
		var notDefined metadata.NotDefinedError
		switch {
		case errors.As(err, &notDefined):
			return "", errors.New("the GCP metadata server has no identity for this machine: attach a service account to the instance " +
				"(or, on GKE, bind the pod's Kubernetes service account to a Google service account with Workload Identity)")
		case ctx.Err() != nil:
			return "", fmt.Errorf("the GCP metadata server did not answer within %s; run on a GCE instance or GKE pod, or set GCE_METADATA_HOST", gcpMetadataTimeout)
		}
		return "", fmt.Errorf("requesting an identity token from the GCP metadata server: %w", err)
	}
	tok = strings.TrimSpace(tok)
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \t\n") {
		return "", fmt.Errorf("the GCP metadata server answered with something that is not a token: %q", lastLines(tok, 3))
	}
	return tok, nil
}
