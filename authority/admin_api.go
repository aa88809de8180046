package authority

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// Admin API paths. Every one needs a client certificate of an admin identity.
const (
	PathAdminResources = "/v1/admin/resources"
	PathAdminAudit     = "/v1/admin/audit"
	PathAdminSettings  = "/v1/admin/settings"
	// PathAdminLeafTunnels lists the leaf clusters' tunnels (GET).
	PathAdminLeafTunnels = "/v1/admin/leaf_tunnels"
	// PathAdminBots + "/NAME/unlock" lifts a bot's lock (POST).
	PathAdminBots = "/v1/admin/bots"
	// PathAdminBotInstances lists bot instances (GET, ?bot=NAME narrows);
	// PathAdminBotInstances + "/ID/unlock" lifts an instance's lock (POST).
	PathAdminBotInstances = "/v1/admin/bot_instances"
	// PathAdminAdmins + "/NAME/lock" (POST, a LockRequest) and "/NAME/unlock"
	// (POST) lock and unlock an admin's identities.
	PathAdminAdmins = "/v1/admin/admins"
	// PathAdminJoinTokens + "/NAME/unlock" lifts a bound_keypair join token's lock (POST).
	PathAdminJoinTokens = "/v1/admin/join_tokens"
	// PathAdminLocks lists the locks (GET) and sets one (POST, a
	// LockRequest); PathAdminLocks + "/unlock" lifts one (POST, a
	// LockRequest's kind and target).
	PathAdminLocks = "/v1/admin/locks"
	// PathAdminAuditSummary counts a span of the audit log (GET, since,
	// until, step, event, top), as the console's overview shows it.
	PathAdminAuditSummary = "/v1/admin/audit/summary"
	// PathAdminAuditScan is PathAdminAudit reading at most scan index
	// entries (GET, its filters and scan=N): a store.AuditScan, which says
	// how far back it looked when the window ran out first (the console's
	// audit page).
	PathAdminAuditScan = "/v1/admin/audit/scan"
	// PathAdminCAs lists the CAs' rotation phases and fingerprints (GET).
	PathAdminCAs = "/v1/admin/cas"
	// PathAdminIssued lists issued certificates (GET, ?audit_id=N: those
	// issued with that audit record).
	PathAdminIssued = "/v1/admin/issued"
)

// AdminDirName is the directory under data_dir where the first start writes
// an admin identity, like kubeadm's admin.conf.
const AdminDirName = "admin"

// AdminInfo is admin.json in an admin identity directory: where the
// authority is and how to trust it.
type AdminInfo struct {
	Authority string `json:"authority"`
	CAPin     string `json:"ca_pin"`
	Name      string `json:"name"`
	// ReadOnly says the identity may only read (its certificate carries
	// AdminReadOnly; that is what the authority goes by).
	ReadOnly bool `json:"read_only,omitempty"`
}

// AdminSettings are the cluster-wide settings the admin API reports.
type AdminSettings struct {
	ClusterName       string `json:"cluster_name"`
	RequireSessionMFA bool   `json:"require_session_mfa"`
	DeviceTrustMode   string `json:"device_trust_mode"`
	MaxAdminTTL       string `json:"max_admin_ttl"`
	// CAKeysAtRest is "sealed" (ca_key_encryption) or "clear"; empty from
	// an authority that predates it.
	CAKeysAtRest string `json:"ca_keys_at_rest,omitempty"`
}

// StoredDocument is one resource as the admin API lists it: its YAML as written.
type StoredDocument struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	YAML string `json:"yaml"`
}

// ApplyRequest carries YAML documents to apply.
type ApplyRequest struct {
	File string `json:"file"`
	YAML string `json:"yaml"`
}

// adminSPIFFE is the URI SAN prefix of admin client certificates.
func (a *Authority) adminSPIFFE() string { return "spiffe://" + a.cfg.ClusterName + "/admin/" }

// adminName returns the admin behind a request's verified client
// certificate, or an error when the caller is not an admin. Bot
// certificates, signed by the same CA, are refused.
func (a *Authority) adminName(r *http.Request) (string, error) {
	name, _, err := a.adminOf(r)
	return name, err
}

// adminOf is adminName and whether the identity is read-only.
func (a *Authority) adminOf(r *http.Request) (name string, readOnly bool, err error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", false, identity.Errorf(identity.CodeAdminRequired, "the admin API needs an admin identity: pass --auth DIR with the identity the authority wrote to <data_dir>/%s", AdminDirName)
	}
	leaf := r.TLS.VerifiedChains[0][0]
	for _, u := range leaf.URIs {
		if name, ok := strings.CutPrefix(u.String(), a.adminSPIFFE()); ok && name != "" {
			return name, slices.Contains(leaf.Subject.OrganizationalUnit, AdminReadOnly), nil
		}
	}
	return "", false, identity.Errorf(identity.CodeAdminRequired, "certificate %q is not an admin identity of cluster %s; bot identities cannot administer the authority", leaf.Subject.CommonName, a.cfg.ClusterName)
}

func (a *Authority) adminHandler(h func(w http.ResponseWriter, r *http.Request, actor string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, readOnly, err := a.adminOf(r)
		if err != nil {
			writeError(w, err)
			return
		}
		actor := fmt.Sprintf("admin %s from %s", name, r.RemoteAddr)
		request := identity.Truncate(r.Method+" "+r.URL.Path, 200)
		// A lock written by another process counts at once: one version
		// query per admin request.
		a.refreshNow(r.Context())
		if lock, ok := a.Locks().Lookup(locks.KindAdmin, name, time.Now()); ok {
			refusal := lock.Refusal("admin API request")
			a.auditAdmin(r.Context(), &store.AuditEvent{Event: "admin.refused", Code: string(identity.CodeAdminLocked), Remote: actor,
				Claims:  map[string]string{"admin": name, "request": request},
				Message: refusal.Err.Error()})
			writeError(w, refusal)
			return
		}
		if readOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
			refusal := identity.Errorf(identity.CodeAdminReadOnly, "admin %q has a read-only identity: the admin API answers its reads (mbot get, audit, lint, console) and refuses %s; "+
				"use an identity that may change things (<data_dir>/admin, or mbot sign --admin NAME without --read-only)", name, identity.Printable(request))
			a.auditAdmin(r.Context(), &store.AuditEvent{Event: "admin.refused", Code: string(identity.CodeAdminReadOnly), Remote: actor,
				Claims:  map[string]string{"admin": name, "request": request, "read_only": "true"},
				Message: refusal.Message})
			writeError(w, refusal)
			return
		}
		h(w, r, actor)
	}
}

func (a *Authority) registerAdmin(mux *routes) {
	mux.HandleFunc("GET "+PathAdminResources, a.adminHandler(a.handleListResources))
	mux.HandleFunc("POST "+PathAdminResources, a.adminHandler(a.handleApply))
	mux.HandleFunc("DELETE "+PathAdminResources+"/{kind}/{name}", a.adminHandler(a.handleDelete))
	mux.HandleFunc("GET "+PathAdminAudit, a.adminHandler(a.handleAudit))
	mux.HandleFunc("GET "+PathAdminSettings, a.adminHandler(a.handleSettings))
	mux.HandleFunc("GET "+PathAdminLeafTunnels, a.adminHandler(func(w http.ResponseWriter, r *http.Request, _ string) {
		tunnels, err := a.LeafTunnels(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, tunnels)
	}))
	mux.HandleFunc("POST "+PathAdminBots+"/{name}/unlock", a.adminHandler(a.handleUnlock))
	mux.HandleFunc("GET "+PathAdminBotInstances, a.adminHandler(a.handleBotInstances))
	mux.HandleFunc("POST "+PathAdminBotInstances+"/{id}/unlock", a.adminHandler(a.handleUnlockInstance))
	mux.HandleFunc("POST "+PathAdminAdmins+"/{name}/lock", a.adminHandler(a.handleLockAdmin))
	mux.HandleFunc("POST "+PathAdminAdmins+"/{name}/unlock", a.adminHandler(a.handleUnlockAdmin))
	mux.HandleFunc("POST "+PathAdminJoinTokens+"/{name}/unlock", a.adminHandler(a.handleUnlockJoinToken))
	mux.HandleFunc("GET "+PathAdminLocks, a.adminHandler(func(w http.ResponseWriter, r *http.Request, _ string) {
		list := a.Locks().List(time.Now())
		if list == nil {
			list = []locks.Lock{}
		}
		writeJSON(w, http.StatusOK, list)
	}))
	mux.HandleFunc("POST "+PathAdminLocks, a.adminHandler(a.handleLock))
	mux.HandleFunc("GET "+PathAdminAuditSummary, a.adminHandler(a.handleAuditSummary))
	mux.HandleFunc("GET "+PathAdminAuditScan, a.adminHandler(a.handleAuditScan))
	mux.HandleFunc("GET "+PathAdminCAs, a.adminHandler(func(w http.ResponseWriter, r *http.Request, _ string) {
		writeJSON(w, http.StatusOK, a.CAs().Status())
	}))
	mux.HandleFunc("GET "+PathAdminIssued, a.adminHandler(a.handleIssued))
	mux.HandleFunc("POST "+PathAdminLocks+"/unlock", a.adminHandler(a.handleUnlockLock))
}

func (a *Authority) handleLock(w http.ResponseWriter, r *http.Request, actor string) {
	var req LockRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "the body is not a lock request: %v", err))
		return
	}
	if self, _ := a.adminName(r); req.Kind == locks.KindAdmin && self == req.Target {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "this request is made with an identity of admin %q, which the lock would refuse at once; lock it with another admin's identity (--auth), or on the authority host with --config", req.Target))
		return
	}
	added, err := a.Lock(r.Context(), req, actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, added)
}

func (a *Authority) handleUnlockLock(w http.ResponseWriter, r *http.Request, actor string) {
	var req LockRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "the body is not an unlock request: %v", err))
		return
	}
	lifted, err := a.UnlockLock(r.Context(), req.Kind, req.Target, actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, lifted)
}

func (a *Authority) handleListResources(w http.ResponseWriter, r *http.Request, _ string) {
	a.refresh(r.Context())
	rows, err := a.store.Resources(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	docs := make([]StoredDocument, len(rows))
	for i, row := range rows {
		docs[i] = StoredDocument{Kind: row.Kind, Name: row.Name, YAML: string(row.Body)}
	}
	writeJSON(w, http.StatusOK, docs)
}

func (a *Authority) handleApply(w http.ResponseWriter, r *http.Request, actor string) {
	var req ApplyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(&req); err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "the body is not an apply request: %v", err))
		return
	}
	parsed, err := resources.Parse(req.File, []byte(req.YAML))
	if err == nil {
		err = a.Apply(r.Context(), parsed, actor)
	}
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	applied := make([]string, len(parsed))
	for i, p := range parsed {
		applied[i] = p.Kind + "/" + p.Name()
	}
	writeJSON(w, http.StatusOK, map[string][]string{"applied": applied})
}

func (a *Authority) handleDelete(w http.ResponseWriter, r *http.Request, actor string) {
	if err := a.Delete(r.Context(), r.PathValue("kind"), r.PathValue("name"), actor); err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Authority) handleUnlock(w http.ResponseWriter, r *http.Request, actor string) {
	u, err := a.Unlock(r.Context(), r.PathValue("name"), actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (a *Authority) handleUnlockJoinToken(w http.ResponseWriter, r *http.Request, actor string) {
	u, err := a.UnlockJoinToken(r.Context(), r.PathValue("name"), actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (a *Authority) handleBotInstances(w http.ResponseWriter, r *http.Request, _ string) {
	list, err := a.BotInstances(r.Context(), r.URL.Query().Get("bot"))
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (a *Authority) handleUnlockInstance(w http.ResponseWriter, r *http.Request, actor string) {
	u, err := a.UnlockInstance(r.Context(), r.PathValue("id"), actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (a *Authority) handleLockAdmin(w http.ResponseWriter, r *http.Request, actor string) {
	var req LockRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "the body is not a lock request: %v", err))
		return
	}
	target := r.PathValue("name")
	// Locking the identity the request is made with would lock its caller
	// out with no way back through the API.
	if self, _ := a.adminName(r); self == target {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "this request is made with an identity of admin %q, which the lock would refuse at once; lock it with another admin's identity (--auth), or on the authority host with --config", target))
		return
	}
	lock, err := a.LockAdmin(r.Context(), target, req.Reason, actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, lock)
}

func (a *Authority) handleUnlockAdmin(w http.ResponseWriter, r *http.Request, actor string) {
	lock, err := a.UnlockAdmin(r.Context(), r.PathValue("name"), actor)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, lock)
}

func (a *Authority) handleAudit(w http.ResponseWriter, r *http.Request, _ string) {
	f, err := ParseAuditQuery(r.URL.Query())
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	events, err := a.store.ListAudit(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	if events == nil {
		events = []store.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, events)
}

// MaxAuditScan bounds a PathAdminAuditScan request's window.
const MaxAuditScan = 100_000

func (a *Authority) handleAuditScan(w http.ResponseWriter, r *http.Request, _ string) {
	f, err := ParseAuditQuery(r.URL.Query())
	if err == nil && (f.Scan < 1 || f.Scan > MaxAuditScan) {
		err = fmt.Errorf("scan=%q is not a count from 1 to %d (the index entries to read)", r.URL.Query().Get("scan"), MaxAuditScan)
	}
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	scan, err := a.store.ScanAudit(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	if scan.Records == nil {
		scan.Records = []store.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, scan)
}

// AuditQuery is f as GET PathAdminAudit's query; ParseAuditQuery reads it back.
func AuditQuery(f store.AuditFilter) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	set("bot", f.Bot)
	set("serial", f.Serial)
	set("join_token", f.JoinToken)
	set("method", f.Method)
	set("code", f.Code)
	set("event", f.Event)
	if f.DeniedOnly {
		q.Set("denied", "true")
	}
	if f.AdmittedOnly {
		q.Set("admitted", "true")
	}
	for k, v := range f.Claims {
		q.Add("claim", k+"="+v)
	}
	if f.BeforeID > 0 {
		q.Set("before", strconv.FormatInt(f.BeforeID, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Scan > 0 {
		q.Set("scan", strconv.Itoa(f.Scan))
	}
	return q
}

// ParseAuditQuery reads an audit filter from GET PathAdminAudit's query.
func ParseAuditQuery(q url.Values) (store.AuditFilter, error) {
	f := store.AuditFilter{Bot: q.Get("bot"), DeniedOnly: q.Get("denied") == "true", AdmittedOnly: q.Get("admitted") == "true",
		JoinToken: q.Get("join_token"), Method: q.Get("method"), Code: q.Get("code"), Event: q.Get("event")}
	if s := q.Get("serial"); s != "" {
		serial, err := locks.NormalizeSerial(s)
		if err != nil {
			return f, err
		}
		f.Serial = serial
	}
	for _, k := range []string{"since", "until"} {
		s := q.Get(k)
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return f, fmt.Errorf("%s=%q is not an RFC 3339 time", k, s)
		}
		if k == "since" {
			f.Since = t
		} else {
			f.Until = t
		}
	}
	for _, c := range q["claim"] {
		k, v, ok := strings.Cut(c, "=")
		if !ok || k == "" {
			return f, fmt.Errorf("claim=%q is not NAME=VALUE (repository=acme/app)", c)
		}
		if f.Claims == nil {
			f.Claims = map[string]string{}
		}
		f.Claims[k] = v
	}
	for _, k := range []string{"before", "limit", "scan"} {
		s := q.Get(k)
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return f, fmt.Errorf("%s=%q is not a count", k, s)
		}
		switch k {
		case "before":
			f.BeforeID = n
		case "limit":
			f.Limit = int(min(n, 1<<31-1))
		default:
			f.Scan = int(min(n, 1<<31-1))
		}
	}
	return f, nil
}

func (a *Authority) handleAuditSummary(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	f := store.SummaryFilter{Event: q.Get("event")}
	for _, k := range []string{"since", "until"} {
		if s := q.Get(k); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				writeError(w, identity.Errorf(identity.CodeBadRequest, "%s=%q is not an RFC 3339 time", k, s))
				return
			}
			if k == "since" {
				f.Since = t
			} else {
				f.Until = t
			}
		}
	}
	if s := q.Get("step"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Minute || d > 24*time.Hour {
			writeError(w, identity.Errorf(identity.CodeBadRequest, "step=%q is not a duration from 1m to 24h", s))
			return
		}
		f.Step = d
	}
	if s := q.Get("top"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			writeError(w, identity.Errorf(identity.CodeBadRequest, "top=%q is not a count from 1 to 100", s))
			return
		}
		f.Top = n
	}
	// At most 2 days of minutes: a summary reads one row per minute.
	if f.Until.IsZero() {
		f.Until = time.Now()
	}
	if f.Until.Sub(f.Since)/max(f.Step, time.Minute) > 3000 {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "since..until spans more than 3000 steps of %s; give a later since or a longer step", max(f.Step, time.Minute)))
		return
	}
	sum, err := a.store.AuditSummary(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

func (a *Authority) handleIssued(w http.ResponseWriter, r *http.Request, _ string) {
	id, err := strconv.ParseInt(r.URL.Query().Get("audit_id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "audit_id=%q is not an audit record's id", r.URL.Query().Get("audit_id")))
		return
	}
	list, err := a.store.IssuedCertificates(r.Context(), store.IssuedFilter{AuditID: id, Limit: 1000})
	if err != nil {
		writeError(w, err)
		return
	}
	if list == nil {
		list = []store.IssuedCertificate{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (a *Authority) handleSettings(w http.ResponseWriter, _ *http.Request, _ string) {
	writeJSON(w, http.StatusOK, AdminSettings{ClusterName: a.cfg.ClusterName, RequireSessionMFA: a.cfg.RequireSessionMFA,
		DeviceTrustMode: a.cfg.DeviceTrustMode, MaxAdminTTL: a.cfg.MaxAdminTTL.String(), CAKeysAtRest: a.KeysAtRest()})
}

// adminName is the name of the admin identity every start writes.
const adminName = "admin"

// ensureAdminIdentity writes <data_dir>/admin (tls.key, tls.crt, ca.crt,
// admin.json) unless a fresh one is there, so that every start leaves an
// operator able to use the admin API remotely. It lives admin_identity_ttl
// (default 24h): a credential lying in a directory should not outlive the
// day it was needed for. One with less than half of that left, or more
// than all of it (written under a longer setting), is replaced.
func (a *Authority) ensureAdminIdentity(ctx context.Context, addr net.Addr) error {
	dir := filepath.Join(a.cfg.DataDir, AdminDirName)
	ttl := time.Duration(a.cfg.AdminIdentityTTL)
	// A CA rotation step changes the bundle: the identity is written again.
	caPEM, _ := os.ReadFile(filepath.Join(dir, identity.FileCA))
	if data, err := os.ReadFile(filepath.Join(dir, identity.FileTLSCert)); err == nil && bytes.Equal(caPEM, a.CAs().TLSCertPEM) {
		if block, _ := pem.Decode(data); block != nil {
			if cert, err := x509.ParseCertificate(block.Bytes); err == nil && cert.CheckSignatureFrom(a.CAs().TLSCert) == nil {
				if left := time.Until(cert.NotAfter); left > ttl/2 && left <= ttl+time.Minute {
					return nil
				}
			}
		}
	}
	const name = adminName
	if _, ok := a.Locks().Lookup(locks.KindAdmin, name, time.Now()); ok {
		a.log.Warn("admin \"admin\" is locked: the admin API refuses the identity written now until mbot unlock --admin admin --config on this host", "dir", dir)
	}
	notAfter := time.Now().Add(ttl)
	files, _, err := a.adminIdentity(name, notAfter, false, "https://"+dialable(addr))
	if err != nil {
		return err
	}
	if err := identity.WriteDir(dir, files); err != nil {
		return fmt.Errorf("writing the admin identity: %w", err)
	}
	a.audit(ctx, "sign.admin", "authority start", fmt.Sprintf("admin identity %q in %s until %s", name, dir, notAfter.UTC().Format(time.RFC3339)))
	a.log.Info("wrote an admin identity", "dir", dir, "not_after", notAfter)
	return nil
}

// AdminReadOnly is the Organizational Unit of a read-only admin identity's
// certificate (mbot sign --admin NAME --read-only): the admin API answers
// its reads and refuses everything else with admin_read_only. The CA that
// signs bots' certificates signs it, so no one else can set it.
const AdminReadOnly = "read-only"

// adminIdentity signs an admin identity for admin name until notAfter (read
// only or not) and returns its files, admin.json naming authorityURL.
func (a *Authority) adminIdentity(name string, notAfter time.Time, readOnly bool, authorityURL string) ([]identity.File, *SignedCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	spiffe, _ := url.Parse(a.adminSPIFFE() + name)
	subject := pkixName(name, a.cfg.ClusterName)
	if readOnly {
		subject.OrganizationalUnit = []string{AdminReadOnly}
	}
	cert, err := a.CAs().signTLS(&x509.Certificate{
		Subject:     subject,
		URIs:        []*url.URL{spiffe},
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	info, _ := json.MarshalIndent(AdminInfo{Authority: authorityURL, CAPin: a.CAs().Pin(), Name: name, ReadOnly: readOnly}, "", "  ")
	return []identity.File{
		{Name: identity.FileTLSKey, Data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), Mode: 0o600},
		{Name: identity.FileTLSCert, Data: []byte(cert.PEM()), Mode: 0o644},
		{Name: identity.FileCA, Data: a.CAs().TLSCertPEM, Mode: 0o644},
		{Name: "admin.json", Data: append(info, '\n'), Mode: 0o644},
	}, cert, nil
}

// dialable turns a listen address into one a local client can dial.
func dialable(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
