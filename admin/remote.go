package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// Remote acts on an authority through its admin API, authenticated by the
// client certificate of an admin identity directory (tls.crt, tls.key,
// ca.crt and admin.json, as the authority writes to <data_dir>/admin).
type Remote struct {
	base   *url.URL
	client *http.Client
}

// OpenRemote reads the admin identity in dir. authorityURL overrides the
// address recorded in its admin.json.
func OpenRemote(dir, authorityURL string) (*Remote, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, identity.FileTLSCert), filepath.Join(dir, identity.FileTLSKey))
	if err != nil {
		return nil, fmt.Errorf("reading the admin identity in %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, identity.FileCA))
	if err != nil {
		return nil, fmt.Errorf("reading the admin identity in %s: %w", dir, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s has no CA certificate", filepath.Join(dir, identity.FileCA))
	}
	if authorityURL == "" {
		var info authority.AdminInfo
		data, err := os.ReadFile(filepath.Join(dir, "admin.json"))
		if err == nil {
			err = json.Unmarshal(data, &info)
		}
		if err != nil || info.Authority == "" {
			return nil, fmt.Errorf("%s/admin.json does not say where the authority is; pass --authority", dir)
		}
		authorityURL = info.Authority
	}
	u, err := url.Parse(authorityURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--authority %q is not an https:// URL", authorityURL)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:       tls.VersionTLS12,
		RootCAs:          roots,
		Certificates:     []tls.Certificate{cert},
		CurvePreferences: identity.TLSCurves,
	}}
	return &Remote{base: u, client: &http.Client{Transport: transport, Timeout: 30 * time.Second}}, nil
}

func (r *Remote) Apply(ctx context.Context, file string, data []byte) ([]string, error) {
	var out struct {
		Applied []string `json:"applied"`
	}
	err := r.do(ctx, http.MethodPost, authority.PathAdminResources, authority.ApplyRequest{File: file, YAML: string(data)}, &out)
	return out.Applied, err
}

func (r *Remote) Resources(ctx context.Context) (*resources.Set, error) {
	var docs []authority.StoredDocument
	if err := r.do(ctx, http.MethodGet, authority.PathAdminResources, nil, &docs); err != nil {
		return nil, err
	}
	var all []resources.Resource
	for _, d := range docs {
		parsed, err := resources.Parse(fmt.Sprintf("%s/%s", d.Kind, d.Name), []byte(d.YAML))
		if err != nil {
			return nil, err
		}
		all = append(all, parsed...)
	}
	return resources.NewSet(all), nil
}

func (r *Remote) Delete(ctx context.Context, kind, name string) error {
	return r.do(ctx, http.MethodDelete, authority.PathAdminResources+"/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, nil)
}

func (r *Remote) Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if f.Bot != "" {
		q.Set("bot", f.Bot)
	}
	if f.DeniedOnly {
		q.Set("denied", "true")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var events []store.AuditEvent
	err := r.do(ctx, http.MethodGet, authority.PathAdminAudit+"?"+q.Encode(), nil, &events)
	return events, err
}

func (r *Remote) Settings(ctx context.Context) (*Settings, error) {
	var s Settings
	return &s, r.do(ctx, http.MethodGet, authority.PathAdminSettings, nil, &s)
}

func (r *Remote) Close() error {
	r.client.CloseIdleConnections()
	return nil
}

func (r *Remote) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	u, err := r.base.Parse(path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the authority's admin API at %s: %w", r.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e identity.ErrorResponse
		if json.Unmarshal(data, &e) == nil && e.Code != "" {
			return &identity.Error{Code: e.Code, Message: e.Message}
		}
		return fmt.Errorf("the admin API answered %s to %s %s", resp.Status, method, path)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.Unmarshal(data, out)
}
