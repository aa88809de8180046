package authority

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// wellKnownMaxAge is how long relying parties may cache the discovery
// document, the JWKS and the SPIFFE bundle (also the bundle's refresh hint).
const wellKnownMaxAge = 5 * time.Minute

// registerIssuer serves, without authentication, what relying parties
// need to trust JWT-SVIDs and X.509-SVIDs: the OIDC discovery document,
// the JWT key set and the SPIFFE trust bundle. All of it is public.
func (a *Authority) registerIssuer(mux *routes) {
	mux.HandleFunc("GET "+identity.PathOIDCDiscovery, a.handleDiscovery)
	mux.HandleFunc("GET "+identity.PathJWKS, a.handleJWKS)
	mux.HandleFunc("GET "+identity.PathSPIFFEBundle, a.handleSPIFFEBundle)
}

// OIDCDiscovery is the authority's /.well-known/openid-configuration.
type OIDCDiscovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

func (a *Authority) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	iss := a.issuerURL()
	writePublicJSON(w, "application/json", OIDCDiscovery{
		Issuer:                           iss,
		JWKSURI:                          iss + identity.PathJWKS,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{"ES256"},
		ClaimsSupported:                  []string{"sub", "aud", "exp", "iat", "iss", "jti"},
	})
}

func (a *Authority) handleJWKS(w http.ResponseWriter, r *http.Request) {
	writePublicJSON(w, "application/jwk-set+json", map[string]any{"keys": a.CAs().JWKs()})
}

func (a *Authority) handleSPIFFEBundle(w http.ResponseWriter, r *http.Request) {
	body, err := a.CAs().SPIFFEBundle(a.cfg.ClusterName)
	if err != nil {
		a.log.Error("marshalling the SPIFFE bundle", "err", err)
		writeError(w, err)
		return
	}
	writePublic(w, "application/json", body)
}

// SPIFFEBundle is the cluster's SPIFFE trust bundle (SPIFFE Trust Domain
// and Bundle §4): a JWKS holding the spiffe CA (use x509-svid) and the JWT
// key (use jwt-svid), as SPIRE serves it and go-spiffe reads it.
func (c *CAs) SPIFFEBundle(clusterName string) ([]byte, error) {
	td, err := spiffeid.TrustDomainFromString(clusterName)
	if err != nil {
		return nil, err
	}
	b := spiffebundle.New(td)
	for _, m := range c.sets[caSPIFFE].trusted() {
		b.AddX509Authority(m.cert)
	}
	for _, m := range c.sets[caJWT].trusted() {
		pub := &m.key.(*ecdsa.PrivateKey).PublicKey
		if err := b.AddJWTAuthority(JWKThumbprint(pub), pub); err != nil {
			return nil, err
		}
	}
	b.SetRefreshHint(wellKnownMaxAge)
	return b.Marshal()
}

func writePublicJSON(w http.ResponseWriter, contentType string, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, err)
		return
	}
	writePublic(w, contentType, append(body, '\n'))
}

// writePublic answers with a public document that may be cached a while:
// keys rotate rarely, and a relying party refetches on an unknown kid.
func writePublic(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(wellKnownMaxAge.Seconds())))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// issuerURL is the iss of JWT-SVIDs and the base of the discovery URLs:
// issuer_url when set, else https:// and the first tls_names entry (or the
// listen host, or this host's name when it listens on every address) with
// the port the authority listens on.
func (a *Authority) issuerURL() string {
	if p := a.issuer.Load(); p != nil {
		return *p
	}
	_, port, _ := net.SplitHostPort(a.cfg.Listen)
	return a.defaultIssuer(port)
}

// setIssuer fixes the issuer URL once the listening port is known.
func (a *Authority) setIssuer(addr net.Addr) {
	port := ""
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	}
	iss := a.defaultIssuer(port)
	a.issuer.Store(&iss)
}

func (a *Authority) defaultIssuer(port string) string {
	if a.cfg.IssuerURL != "" {
		return a.cfg.IssuerURL
	}
	host, _, _ := net.SplitHostPort(a.cfg.Listen)
	switch ip := net.ParseIP(host); {
	case len(a.cfg.TLSNames) > 0:
		host = a.cfg.TLSNames[0]
	case host == "" || ip != nil && ip.IsUnspecified():
		host = "localhost"
		if h, err := os.Hostname(); err == nil && CheckHostName("host name", h) == nil {
			host = h
		}
	}
	if port == "443" || port == "" {
		if strings.Contains(host, ":") {
			return "https://[" + host + "]"
		}
		return "https://" + host
	}
	return "https://" + net.JoinHostPort(host, port)
}

// checkIssuerURL checks issuer_url: https://host[:port], nothing else, as
// AWS IAM and the OIDC discovery spec take it (discovery appends
// /.well-known/openid-configuration to it).
func checkIssuerURL(s string) (string, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("%q is not a URL (%v)", s, err)
	case u.Scheme != "https":
		return "", fmt.Errorf("%q must start with https:// (relying parties fetch the discovery document over TLS)", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", fmt.Errorf("%q may hold no user, query or fragment: write https://host[:port]", s)
	case u.Path != "" && u.Path != "/":
		return "", fmt.Errorf("%q has a path; the authority serves %s at its root, so write https://host[:port]", s, identity.PathOIDCDiscovery)
	}
	if err := CheckHostName("its host", u.Hostname()); err != nil {
		return "", fmt.Errorf("%q: %v", s, err)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q: port %q is not 1 to 65535", s, p)
		}
	}
	return "https://" + u.Host, nil
}
