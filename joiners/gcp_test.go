package joiners_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/joiners"
)

// jwtClaims reads a token's payload without verifying it: what the
// authority would be shown.
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not a JWT", tok)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// dmiFile is a DMI attribute file with content, as /sys/class/dmi/id shows it.
func dmiFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dmi")
	if err := os.WriteFile(path, []byte(content+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGCPDetect(t *testing.T) {
	t.Run("GCE_METADATA_HOST", func(t *testing.T) {
		j, err := joiners.Detect(envOf(map[string]string{"GCE_METADATA_HOST": "127.0.0.1:8080"}))
		if err != nil || j.Method() != "gcp" {
			t.Fatalf("Detect with GCE_METADATA_HOST: %v, %v; want gcp", j, err)
		}
	})
	for _, tc := range []struct {
		product string
		want    bool
	}{
		{"Google Compute Engine", true},
		{"Google", true},
		{"Standard PC (Q35 + ICH9, 2009)", false},
		{"Virtual Machine", false},
	} {
		t.Run("product name "+tc.product, func(t *testing.T) {
			defer joiners.SetGCPProductNamePath(dmiFile(t, tc.product))()
			j, err := joiners.Detect(envOf(nil))
			if got := err == nil && j.Method() == "gcp"; got != tc.want {
				t.Errorf("Detect on a machine named %q: %v, %v; want gcp: %t", tc.product, j, err, tc.want)
			}
		})
	}
	t.Run("GitHub runner on GCE", func(t *testing.T) {
		defer joiners.SetGCPProductNamePath(dmiFile(t, "Google Compute Engine"))()
		j, err := joiners.Detect(envOf(merge(githubEnv, map[string]string{"GCE_METADATA_HOST": "metadata.google.internal"})))
		if err != nil || j.Method() != "github" {
			t.Errorf("Detect: %v, %v; want github", j, err)
		}
	})
	t.Run("GKE pod", func(t *testing.T) {
		// The pod's token comes before the node's metadata server.
		token := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(token, []byte("header.payload.signature"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer joiners.SetGCPProductNamePath(dmiFile(t, "Google Compute Engine"))()
		defer joiners.SetKubernetesTokenPaths(token)()
		j, err := joiners.Detect(envOf(map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}))
		if err != nil || j.Method() != "kubernetes" {
			t.Errorf("Detect: %v, %v; want kubernetes", j, err)
		}
	})
}

// gceMetadata starts the metadata server stand-in with an issuer and
// points GCE_METADATA_HOST at it.
func gceMetadata(t *testing.T) *simci.GCEMetadata {
	t.Helper()
	iss, err := simci.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	m, err := simci.StartGCEMetadata(iss, simci.GCPClaims())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	t.Setenv("GCE_METADATA_HOST", m.Host)
	return m
}

func TestGCPProof(t *testing.T) {
	for _, audience := range []string{"acme", "https://auth.acme.internal:8443/?team=a&b c"} {
		t.Run(audience, func(t *testing.T) {
			m := gceMetadata(t)
			tok, err := proof(t, "gcp", nil, audience)
			if err != nil {
				t.Fatalf("gcp Proof: %v", err)
			}
			c := jwtClaims(t, tok)
			if c["aud"] != audience {
				t.Errorf("aud %v, want %q", c["aud"], audience)
			}
			// format=full: the project, zone and instance are in the token.
			ce, _ := c["google"].(map[string]any)["compute_engine"].(map[string]any)
			if ce["project_id"] != "acme-ci" || ce["zone"] != "us-central1-a" {
				t.Errorf("google.compute_engine %v; the token was not requested with format=full", c["google"])
			}
			if got := m.Audiences(); !reflect.DeepEqual(got, []string{audience}) {
				t.Errorf("the metadata server was asked for %q, want [%q]", got, audience)
			}
		})
	}
}

func TestGCPProofRefused(t *testing.T) {
	defer joiners.SetCloudTimeouts(500 * time.Millisecond)()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{
			name:    "no service account on the instance",
			handler: func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) },
			want:    "attach a service account",
		},
		{
			name: "metadata server refuses",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "Your client does not have permission", http.StatusForbidden)
			},
			want: "does not have permission",
		},
		{
			name:    "not a token",
			handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>captive portal</html>")) },
			want:    "not a token",
		},
		{
			name: "metadata server hangs",
			handler: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			},
			want: "did not answer within 500ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(srv.URL, "http://"))
			_, err := proof(t, "gcp", nil, "acme")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	t.Run("no audience", func(t *testing.T) {
		gceMetadata(t)
		j, _ := joiners.ByMethod("gcp")
		if _, err := j.Proof(context.Background(), envOf(nil), ""); err == nil {
			t.Error("asked for a token of no audience")
		}
	})
}
