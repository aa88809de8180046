package simci

import (
	"crypto/subtle"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The Azure tenant, subscription and identities of AzureClaims.
const (
	AzureTenantID       = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	AzureSubscriptionID = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	// AzureClientID is the client id of the user-assigned identity mbot-ci.
	AzureClientID = "2f4b6d8e-0a1c-4e3f-9b5d-7c9e1a3b5d7f"
)

// AzureClaims are the claims (but iss, which is the Issuer's) of an access token of the user-assigned
// managed identity mbot-ci (resource group Identities) attached to virtual
// machine ci-runner-7 (resource group CI-Runners), as IMDS hands it out:
// a v1.0 token shaped like Microsoft Entra ID's documented access token.
func AzureClaims() map[string]any {
	return map[string]any{
		"idp":        "https://sts.windows.net/" + AzureTenantID + "/",
		"aio":        "k2BgYDi5mvXdQ/7X3nHtEj6p6fMKAA==",
		"appid":      AzureClientID,
		"appidacr":   "2",
		"idtyp":      "app",
		"oid":        "9c3e5a7b-1d2f-4a6c-8e0b-3f5d7a9c1e2b",
		"sub":        "9c3e5a7b-1d2f-4a6c-8e0b-3f5d7a9c1e2b",
		"tid":        AzureTenantID,
		"rh":         "0.AXEAv4j5cvGGr0GRqy180BHbR4Wc7WGbcD1Ast1vJ88b3qtxAAA.",
		"uti":        "pK3cM9m0h0ay3rY1xg4BAA",
		"ver":        "1.0",
		"xms_mirid":  "/subscriptions/" + AzureSubscriptionID + "/resourcegroups/Identities/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mbot-ci",
		"xms_az_rid": "/subscriptions/" + AzureSubscriptionID + "/resourcegroups/CI-Runners/providers/Microsoft.Compute/virtualMachines/ci-runner-7",
	}
}

// AzureIMDS is a loopback stand-in for the managed identity token endpoints
// of Azure: IMDS (/metadata/identity/oauth2/token) and App Service's
// IDENTITY_ENDPOINT (/msi/token). Like IMDS it answers only requests with
// the Metadata: true header and without X-Forwarded-For, requires the
// resource (the audience), and knows the identities attached to the
// machine: a user-assigned one is chosen by client_id. Like App Service it
// requires X-IDENTITY-HEADER. Like both, it hands out the token it minted
// last for an identity and resource again, unless IMDS is asked to
// bypass_cache. Its tokens are signed by the Issuer it was started with,
// for aud = resource.
type AzureIMDS struct {
	URL string
	srv *http.Server
	iss *Issuer
	// identityHeader is App Service's IDENTITY_HEADER secret.
	identityHeader string

	mu         sync.Mutex
	identities map[string]map[string]any // by client id; "" is the system-assigned one
	cache      map[AzureTokenRequest]string
	requests   []AzureTokenRequest
}

// AzureTokenRequest is what the stand-in was asked for.
type AzureTokenRequest struct {
	Endpoint    string // "imds" or "app_service"
	Resource    string
	ClientID    string
	BypassCache bool
}

// StartAzureIMDS serves the stand-in on 127.0.0.1 with one user-assigned
// identity, AzureClientID, whose tokens carry claims (for example
// AzureClaims()).
func StartAzureIMDS(iss *Issuer, claims map[string]any) (*AzureIMDS, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &AzureIMDS{
		URL: "http://" + ln.Addr().String(), iss: iss, identityHeader: randomHex(16),
		identities: map[string]map[string]any{AzureClientID: maps.Clone(claims)},
		cache:      map[AzureTokenRequest]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/identity/oauth2/token", a.imds)
	mux.HandleFunc("GET /msi/token", a.appService)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go a.srv.Serve(ln)
	return a, nil
}

// Close stops the stand-in.
func (a *AzureIMDS) Close() error { return a.srv.Close() }

// SetSystemAssigned attaches a system-assigned identity whose tokens carry claims.
func (a *AzureIMDS) SetSystemAssigned(claims map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.identities[""] = maps.Clone(claims)
}

// Requests lists the token requests answered so far.
func (a *AzureIMDS) Requests() []AzureTokenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AzureTokenRequest(nil), a.requests...)
}

// AppServiceEnv is the environment App Service gives an app with a
// managed identity: IDENTITY_ENDPOINT and its IDENTITY_HEADER secret.
func (a *AzureIMDS) AppServiceEnv() map[string]string {
	return map[string]string{"IDENTITY_ENDPOINT": a.URL + "/msi/token", "IDENTITY_HEADER": a.identityHeader}
}

// azureError answers as Microsoft Entra ID's endpoints do.
func azureError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	writeJSONBody(w, map[string]string{"error": code, "error_description": description})
}

func (a *AzureIMDS) imds(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case r.Header.Get("Metadata") != "true":
		azureError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
	case r.Header.Get("X-Forwarded-For") != "":
		azureError(w, http.StatusBadRequest, "invalid_request", "Request should not contain X-Forwarded-For header")
	case q.Get("api-version") == "":
		azureError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
	default:
		a.token(w, AzureTokenRequest{Endpoint: "imds", Resource: q.Get("resource"), ClientID: q.Get("client_id"), BypassCache: q.Get("bypass_cache") == "true"})
	}
}

func (a *AzureIMDS) appService(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(a.identityHeader)) != 1:
		azureError(w, http.StatusUnauthorized, "invalid_request", "X-IDENTITY-HEADER is missing or wrong")
	case q.Get("api-version") == "":
		azureError(w, http.StatusBadRequest, "invalid_request", "api-version is required")
	default:
		a.token(w, AzureTokenRequest{Endpoint: "app_service", Resource: q.Get("resource"), ClientID: q.Get("client_id")})
	}
}

func (a *AzureIMDS) token(w http.ResponseWriter, req AzureTokenRequest) {
	if req.Resource == "" {
		azureError(w, http.StatusBadRequest, "invalid_request", "Required audience parameter not specified")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests = append(a.requests, req)
	claims, ok := a.identities[req.ClientID]
	if !ok {
		azureError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
		return
	}
	key := req
	key.BypassCache = false
	tok, cached := a.cache[key]
	if !cached || req.BypassCache {
		claims = maps.Clone(claims)
		claims["aud"] = req.Resource
		var err error
		if tok, err = a.iss.Mint(claims); err != nil {
			azureError(w, http.StatusInternalServerError, "unknown_error", err.Error())
			return
		}
		a.cache[key] = tok
	}
	now := time.Now()
	exp := now.Add(a.iss.TTL)
	clientID := req.ClientID
	if clientID == "" {
		clientID, _ = claims["appid"].(string)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	writeJSONBody(w, map[string]string{
		"access_token":   tok,
		"client_id":      clientID,
		"expires_in":     strconv.Itoa(int(a.iss.TTL.Seconds())),
		"expires_on":     strconv.FormatInt(exp.Unix(), 10),
		"ext_expires_in": strconv.Itoa(int(a.iss.TTL.Seconds())),
		"not_before":     strconv.FormatInt(now.Unix(), 10),
		"resource":       req.Resource,
		"token_type":     "Bearer",
	})
}

func writeJSONBody(w http.ResponseWriter, v any) { _ = json.NewEncoder(w).Encode(v) }
