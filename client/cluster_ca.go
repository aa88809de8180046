package client

import (
	"context"
	"crypto/tls"
	"net/http"

	"github.com/mbot-dev/mbot/identity"
)

// FetchClusterCA fetches an authority's TLS CA bundle over a connection
// pinned to caPin: what a leaf authority trusts its root's identities by.
func FetchClusterCA(ctx context.Context, authorityURL, caPin string) (*identity.ClusterCAResponse, error) {
	api, err := NewAPI(authorityURL, caPin)
	if err != nil {
		return nil, err
	}
	defer api.CloseIdleConnections()
	var out identity.ClusterCAResponse
	if err := api.Do(ctx, http.MethodGet, identity.PathClusterCA, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PinnedTLSConfig is the TLS configuration NewAPI uses for authorityURL
// and caPin, for connections that are not API requests (a leaf's tunnel).
func PinnedTLSConfig(authorityURL, caPin string) (*tls.Config, error) {
	api, err := NewAPI(authorityURL, caPin)
	if err != nil {
		return nil, err
	}
	return api.client.Transport.(*http.Transport).TLSClientConfig.Clone(), nil
}
