package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// Remote acts on an authority through its admin API, authenticated by the
// client certificate of an admin identity directory (tls.crt, tls.key,
// ca.crt and admin.json, as the authority writes to <data_dir>/admin).
type Remote struct {
	api *client.API
	// readOnly: the identity's certificate is a read-only admin's.
	readOnly bool
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
	api, err := client.NewAPIWithIdentity(authorityURL, roots, cert)
	if err != nil {
		return nil, err
	}
	return &Remote{api: api, readOnly: cert.Leaf != nil && slices.Contains(cert.Leaf.Subject.OrganizationalUnit, authority.AdminReadOnly)}, nil
}

// ReadOnly says the identity is a read-only admin's (mbot sign --admin
// --read-only): the admin API refuses its changes with admin_read_only.
func (r *Remote) ReadOnly() bool { return r.readOnly }

func (r *Remote) Apply(ctx context.Context, file string, data []byte) ([]string, error) {
	var out struct {
		Applied []string `json:"applied"`
	}
	err := r.api.Do(ctx, http.MethodPost, authority.PathAdminResources, authority.ApplyRequest{File: file, YAML: string(data)}, &out)
	return out.Applied, err
}

func (r *Remote) Resources(ctx context.Context) (*resources.Set, error) {
	var docs []authority.StoredDocument
	if err := r.api.Do(ctx, http.MethodGet, authority.PathAdminResources, nil, &docs); err != nil {
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
	return r.api.Do(ctx, http.MethodDelete, authority.PathAdminResources+"/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, nil)
}

func (r *Remote) Unlock(ctx context.Context, bot string) (*Unlocked, error) {
	var u Unlocked
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminBots+"/"+url.PathEscape(bot)+"/unlock", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

func (r *Remote) UnlockJoinToken(ctx context.Context, name string) (*JoinTokenUnlocked, error) {
	var u JoinTokenUnlocked
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminJoinTokens+"/"+url.PathEscape(name)+"/unlock", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

func (r *Remote) UnlockInstance(ctx context.Context, id string) (*Unlocked, error) {
	var u Unlocked
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminBotInstances+"/"+url.PathEscape(id)+"/unlock", nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

func (r *Remote) BotInstances(ctx context.Context, bot string) ([]BotInstance, error) {
	path := authority.PathAdminBotInstances
	if bot != "" {
		path += "?" + url.Values{"bot": {bot}}.Encode()
	}
	var list []BotInstance
	if err := r.api.Do(ctx, http.MethodGet, path, nil, &list); err != nil {
		return nil, err
	}
	return list, nil
}

func (r *Remote) LockAdmin(ctx context.Context, admin, reason string) (*AdminLock, error) {
	var l AdminLock
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminAdmins+"/"+url.PathEscape(admin)+"/lock", authority.LockRequest{Reason: reason}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

func (r *Remote) UnlockAdmin(ctx context.Context, admin string) (*AdminLock, error) {
	var l AdminLock
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminAdmins+"/"+url.PathEscape(admin)+"/unlock", nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

func (r *Remote) Lock(ctx context.Context, req LockRequest) (*LockAdded, error) {
	var out LockAdded
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminLocks, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (r *Remote) UnlockLock(ctx context.Context, kind, target string) (*LockLifted, error) {
	var out LockLifted
	if err := r.api.Do(ctx, http.MethodPost, authority.PathAdminLocks+"/unlock", LockRequest{Kind: kind, Target: target}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (r *Remote) Locks(ctx context.Context) ([]Lock, error) {
	var out []Lock
	return out, r.api.Do(ctx, http.MethodGet, authority.PathAdminLocks, nil, &out)
}

func (r *Remote) Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	var events []store.AuditEvent
	err := r.api.Do(ctx, http.MethodGet, authority.PathAdminAudit+"?"+authority.AuditQuery(f).Encode(), nil, &events)
	return events, err
}

func (r *Remote) AuditScan(ctx context.Context, f store.AuditFilter) (*store.AuditScan, error) {
	var scan store.AuditScan
	if err := r.api.Do(ctx, http.MethodGet, authority.PathAdminAuditScan+"?"+authority.AuditQuery(f).Encode(), nil, &scan); err != nil {
		return nil, err
	}
	return &scan, nil
}

func (r *Remote) AuditSummary(ctx context.Context, f store.SummaryFilter) (*store.AuditSummary, error) {
	q := url.Values{"event": {f.Event}}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.Step > 0 {
		q.Set("step", f.Step.String())
	}
	if f.Top > 0 {
		q.Set("top", strconv.Itoa(f.Top))
	}
	var sum store.AuditSummary
	if err := r.api.Do(ctx, http.MethodGet, authority.PathAdminAuditSummary+"?"+q.Encode(), nil, &sum); err != nil {
		return nil, err
	}
	return &sum, nil
}

func (r *Remote) Issued(ctx context.Context, auditID int64) ([]store.IssuedCertificate, error) {
	var out []store.IssuedCertificate
	return out, r.api.Do(ctx, http.MethodGet, authority.PathAdminIssued+"?audit_id="+strconv.FormatInt(auditID, 10), nil, &out)
}

func (r *Remote) CAStatus(ctx context.Context) (*CAStatus, error) {
	var st CAStatus
	if err := r.api.Do(ctx, http.MethodGet, authority.PathAdminCAs, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (r *Remote) Settings(ctx context.Context) (*Settings, error) {
	var s Settings
	return &s, r.api.Do(ctx, http.MethodGet, authority.PathAdminSettings, nil, &s)
}

func (r *Remote) LeafTunnels(ctx context.Context) (map[string]store.LeafTunnel, error) {
	var out map[string]store.LeafTunnel
	return out, r.api.Do(ctx, http.MethodGet, authority.PathAdminLeafTunnels, nil, &out)
}

func (r *Remote) Close() error {
	r.api.CloseIdleConnections()
	return nil
}
