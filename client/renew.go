package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// tokenMethod is the join method with a single-use secret: its identity
// renews itself instead of joining again.
const tokenMethod = "token"

// selfIdentity is the identity a token-joined daemon renews with: the first
// output's TLS client certificate, and the CA that signed the authority's.
type selfIdentity struct {
	joinToken, method string
	notAfter          time.Time
	cert              tls.Certificate
	roots             *x509.CertPool
}

// loadSelfIdentity reads the identity written to dir.
func loadSelfIdentity(dir string) (*selfIdentity, error) {
	sum, err := readSummary(dir)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, identity.FileTLSCert), filepath.Join(dir, identity.FileTLSKey))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, identity.FileCA))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s holds no certificate", filepath.Join(dir, identity.FileCA))
	}
	return &selfIdentity{joinToken: sum.JoinToken, method: sum.Method, notAfter: cert.Leaf.NotAfter, cert: cert, roots: roots}, nil
}

// readSummary reads identity.json in dir.
func readSummary(dir string) (*identity.Summary, error) {
	data, err := os.ReadFile(filepath.Join(dir, identity.FileIdentityJSON))
	if err != nil {
		return nil, err
	}
	var sum identity.Summary
	if err := json.Unmarshal(data, &sum); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, identity.FileIdentityJSON), err)
	}
	return &sum, nil
}

// pendingKeys are the keys of one renewal, kept until it is answered.
type pendingKeys struct {
	keys     []*identity.Keys
	requests []identity.OutputRequest
}

// renewWithIdentity renews every output over mTLS with the current
// identity, and writes them.
func (d *daemon) renewWithIdentity(ctx context.Context) (*IssueResult, error) {
	s := d.set
	if d.pending == nil {
		keys, requests, err := newOutputKeys(s.issue.Outputs)
		if err != nil {
			return nil, err
		}
		d.pending = &pendingKeys{keys: keys, requests: requests}
	}
	api, err := NewAPIWithIdentity(s.issue.Authority, d.self.roots, d.self.cert)
	if err != nil {
		return nil, err
	}
	defer api.CloseIdleConnections()
	keys, requests := d.pending.keys, d.pending.requests
	renew := func(outputs []identity.OutputRequest) (*identity.JoinResponse, error) {
		var resp identity.JoinResponse
		req := &identity.RenewRequest{TTLSeconds: int64(s.issue.TTL / time.Second), Outputs: outputs}
		if err := api.Do(ctx, http.MethodPost, identity.PathRenew, req, &resp); err != nil {
			var refusal *identity.Error
			if errors.As(err, &refusal) {
				return nil, fmt.Errorf("the authority refused the renewal (%s): %s", refusal.Code, refusal.Message)
			}
			return nil, err
		}
		// The authority has moved to the next generation: from now on only the
		// new certificate renews, whether or not the outputs can be written.
		self, err := selfFromAnswer(keys[0], &resp)
		if err != nil {
			return nil, err
		}
		d.self, d.pending = self, nil
		return &resp, nil
	}
	rj, err := planRootJoin(s.issue.Outputs, keys, requests)
	if err != nil {
		return nil, err
	}
	var written []string
	o := s.issue
	o.wrote = d.wrote
	o.withKube()
	defer o.kube.close()
	issued, resp, err := obtain(ctx, o, api, s.dirs, keys, requests, rj, renew, &written)
	if err != nil {
		return nil, err
	}
	return &IssueResult{Dir: s.dirs[0], Method: resp.Method, Response: resp, Outputs: issued}, nil
}

// selfFromAnswer is the identity the first output of a renewal's answer
// makes, held in memory.
func selfFromAnswer(keys *identity.Keys, resp *identity.JoinResponse) (*selfIdentity, error) {
	if len(resp.Outputs) == 0 {
		return nil, errors.New("the authority answered the renewal without certificates")
	}
	keyPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair([]byte(resp.Outputs[0].TLSCertificate), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the authority's renewed certificate does not match the key it was asked for: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(resp.TLSCA)) {
		return nil, errors.New("the authority answered the renewal without its CA")
	}
	return &selfIdentity{joinToken: resp.JoinToken, method: resp.Method, notAfter: cert.Leaf.NotAfter, cert: cert, roots: roots}, nil
}
