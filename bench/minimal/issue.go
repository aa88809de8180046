package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// issue is BenchmarkIssue's comparison: the work a one-shot `mbot issue`
// with one identity output cannot avoid, and nothing else. It asks the
// authority for its audience, fetches the GitHub Actions OIDC token for it,
// generates the output's keys (beside the token fetch, as mbot does), joins
// once over TLS verified against the pinned CA, and writes the identity
// directory with mbot's own renderer and writer (identity.RenderIdentity,
// identity.WriteDir: the same files, fsyncs and atomic swap). It reads the
// same variables as mbot (MBOT_AUTHORITY, MBOT_CA_PIN, MBOT_TOKEN,
// ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN); what it leaves out is what mbot
// adds: flags and mbot.yaml, platform detection, checks of the settings and
// destinations, messages.
func issue(ctx context.Context, out string) error {
	base, err := url.Parse(os.Getenv("MBOT_AUTHORITY"))
	if err != nil || base.Host == "" {
		return errors.New("MBOT_AUTHORITY is not a URL")
	}
	hexPin, _ := strings.CutPrefix(os.Getenv("MBOT_CA_PIN"), "sha256:")
	pin, err := hex.DecodeString(hexPin)
	if err != nil || len(pin) != sha256.Size {
		return errors.New("MBOT_CA_PIN is not sha256:<64 hex digits>")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, CurvePreferences: identity.TLSCurves, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyPinned(cs, pin, base.Hostname()) }}
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 1}}

	type generated struct {
		keys *identity.Keys
		err  error
	}
	keysc := make(chan generated, 1)
	go func() {
		k, err := identity.NewKeys()
		keysc <- generated{k, err}
	}()
	var ping identity.PingResponse
	if err := call(ctx, api, http.MethodGet, base.JoinPath(identity.PathPing).String(), nil, &ping); err != nil {
		return err
	}
	proof, err := githubToken(ctx, ping.Audience)
	if err != nil {
		return err
	}
	g := <-keysc
	if g.err != nil {
		return g.err
	}
	req := identity.JoinRequest{JoinToken: os.Getenv("MBOT_TOKEN"), Method: "github", Proof: proof,
		TTLSeconds: int64(time.Hour / time.Second), Outputs: []identity.OutputRequest{{Name: identity.OutputIdentity,
			SSHPublicKey: g.keys.SSHPublicKey(), TLSPublicKey: g.keys.TLSPublicKeyPEM()}}}
	var resp identity.JoinResponse
	if err := call(ctx, api, http.MethodPost, base.JoinPath(identity.PathJoin).String(), &req, &resp); err != nil {
		return err
	}
	if len(resp.Outputs) != 1 {
		return fmt.Errorf("the join answered %d outputs, not 1", len(resp.Outputs))
	}
	files, err := identity.RenderIdentity(out, g.keys, &resp, &resp.Outputs[0])
	if err != nil {
		return err
	}
	return identity.WriteDir(out, files)
}

// verifyPinned accepts a chain with a CA of the pinned key whose leaf
// verifies up to it for serverName, as mbot's client does.
func verifyPinned(cs tls.ConnectionState, pin []byte, serverName string) error {
	roots := x509.NewCertPool()
	for _, c := range cs.PeerCertificates {
		if sum := sha256.Sum256(c.RawSubjectPublicKeyInfo); c.IsCA && bytes.Equal(sum[:], pin) {
			roots.AddCert(c)
		}
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: serverName, Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// githubToken fetches the job's OIDC token for audience.
func githubToken(ctx context.Context, audience string) (string, error) {
	u, err := url.Parse(os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL"))
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("audience", audience)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct {
		Value string `json:"value"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&tok); err != nil || tok.Value == "" {
		return "", fmt.Errorf("the token endpoint answered %s without a token", resp.Status)
	}
	return tok.Value, nil
}

// call sends in as JSON (if not nil) and decodes a 200 answer into out.
func call(ctx context.Context, c *http.Client, method, target string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s answered %s: %s", method, target, resp.Status, data)
	}
	return json.Unmarshal(data, out)
}
