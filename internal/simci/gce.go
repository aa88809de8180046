package simci

import (
	"maps"
	"net"
	"net/http"
	"sync"
	"time"
)

// GCPClaims are the claims of an identity token of instance ci-runner-7 in
// zone us-central1-a of project acme-ci, requested with format=full, shaped
// like the payload in Google's "Verifying the identity of instances".
func GCPClaims() map[string]any {
	return map[string]any{
		"sub":            "112233445566778899001",
		"azp":            "112233445566778899001",
		"email":          "mbot-ci@acme-ci.iam.gserviceaccount.com",
		"email_verified": true,
		"google": map[string]any{
			"compute_engine": map[string]any{
				"project_id":                  "acme-ci",
				"project_number":              739419398126,
				"zone":                        "us-central1-a",
				"instance_id":                 "4356789012345678901",
				"instance_name":               "ci-runner-7",
				"instance_creation_timestamp": 1748853000,
				"instance_confidentiality":    0,
			},
		},
	}
}

// GCEMetadata is a loopback stand-in for the GCE metadata server's identity
// endpoint. Like the real one it answers only requests with the
// Metadata-Flavor: Google header and without X-Forwarded-For, requires an
// audience, and adds the google.compute_engine claims only for
// format=full. Its tokens are signed by the Issuer it was started with.
type GCEMetadata struct {
	// Host is the host:port for GCE_METADATA_HOST.
	Host string
	srv  *http.Server
	iss  *Issuer

	mu        sync.Mutex
	claims    map[string]any
	audiences []string
}

// StartGCEMetadata serves the stand-in on 127.0.0.1, minting claims (for
// example GCPClaims()) with iss.
func StartGCEMetadata(iss *Issuer, claims map[string]any) (*GCEMetadata, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &GCEMetadata{Host: ln.Addr().String(), iss: iss, claims: maps.Clone(claims)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /computeMetadata/v1/instance/service-accounts/default/identity", m.identity)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go m.srv.Serve(ln)
	return m, nil
}

// Close stops the stand-in.
func (m *GCEMetadata) Close() error { return m.srv.Close() }

// Audiences lists the audiences of the tokens minted so far.
func (m *GCEMetadata) Audiences() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.audiences...)
}

func (m *GCEMetadata) identity(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Metadata-Flavor", "Google")
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing required header \"Metadata-Flavor\": \"Google\"", http.StatusForbidden)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Request contains X-Forwarded-For header; the metadata server does not answer proxied requests", http.StatusForbidden)
		return
	}
	aud := r.URL.Query().Get("audience")
	if aud == "" {
		http.Error(w, "non-empty audience parameter required", http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	claims := maps.Clone(m.claims)
	m.audiences = append(m.audiences, aud)
	m.mu.Unlock()
	if r.URL.Query().Get("format") != "full" {
		delete(claims, "google")
	}
	claims["aud"] = aud
	tok, err := m.iss.Mint(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8") // sic, as GCE answers
	_, _ = w.Write([]byte(tok))
}
