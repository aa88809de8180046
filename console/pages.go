package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// view is what every page's template gets: the layout's fields and the
// page's own data.
type view struct {
	Title    string
	Nav      string
	Source   string
	ReadOnly bool
	CSRF     string
	Message  string
	// Bare is a refusal page: no navigation.
	Bare bool
	Data any
}

type csrfKey struct{}

func withCSRF(ctx context.Context, csrf string) context.Context {
	return context.WithValue(ctx, csrfKey{}, csrf)
}

// pageFunc reads what a page shows; an error is shown on the page.
type pageFunc func(r *http.Request, v *view) error

// page renders name with what fill read, into a buffer first so that a
// failure midway shows an error page, not half a page.
func (s *Server) page(name string, fill pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := &view{Nav: name, Source: s.opts.Source, ReadOnly: s.opts.ReadOnly}
		v.CSRF, _ = r.Context().Value(csrfKey{}).(string)
		status := http.StatusOK
		tmpl := s.pages[name]
		if err := fill(r, v); err != nil {
			status = http.StatusBadGateway
			var bad badRequest
			if errors.As(err, &bad) {
				status = http.StatusBadRequest
			}
			if status == http.StatusBadRequest && v.Data != nil {
				v.Message = err.Error()
			} else {
				tmpl = s.pages["refused"]
				v.Title, v.Message, v.Data = "Error", err.Error(), nil
			}
		}
		var buf bytes.Buffer
		if err := tmpl.ExecuteTemplate(&buf, "layout", v); err != nil {
			s.opts.Log.Error("console: rendering a page", "page", name, "err", err)
			http.Error(w, "rendering the page failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write(buf.Bytes())
	}
}

// badRequest is an error in what the request asked for (a filter), shown
// with the page's form.
type badRequest struct{ error }

func badf(format string, args ...any) error { return badRequest{fmt.Errorf(format, args...)} }

// --- Overview

type overviewData struct {
	Hour, Day *chart
	Codes     []store.NamedCount
	Projects  []store.NamedCount
	CAs       *admin.CAStatus
}

func (s *Server) overview(r *http.Request, v *view) error {
	ctx := r.Context()
	now := s.opts.Now()
	v.Title = "Overview"
	hour, err := s.opts.Client.AuditSummary(ctx, store.SummaryFilter{Since: now.Add(-time.Hour), Until: now, Step: time.Minute, Event: "join"})
	if err != nil {
		return err
	}
	day, err := s.opts.Client.AuditSummary(ctx, store.SummaryFilter{Since: now.Add(-24 * time.Hour), Until: now, Step: time.Minute, Event: "join"})
	if err != nil {
		return err
	}
	cas, err := s.opts.Client.CAStatus(ctx)
	if err != nil {
		return err
	}
	v.Data = &overviewData{Hour: newChart("hour", "Joins per minute, last hour", hour), Day: newChart("day", "Joins per minute, last 24 hours", day),
		Codes: day.Codes, Projects: day.Projects, CAs: cas}
	return nil
}

// --- Bots

type botView struct {
	Name       string
	Roles      []admin.RoleLogins
	JoinTokens []*resources.JoinToken
	Instances  []admin.BotInstance
	Locks      []admin.Lock
}

func (s *Server) bots(r *http.Request, v *view) error {
	ctx := r.Context()
	v.Title = "Bots"
	set, err := s.opts.Client.Resources(ctx)
	if err != nil {
		return err
	}
	instances, err := s.opts.Client.BotInstances(ctx, "")
	if err != nil {
		return err
	}
	lockList, err := s.opts.Client.Locks(ctx)
	if err != nil {
		return err
	}
	settings, err := s.opts.Client.Settings(ctx)
	if err != nil {
		return err
	}
	var out []*botView
	for _, name := range slices.Sorted(maps.Keys(set.Bots)) {
		b := &botView{Name: name, Roles: admin.BotLogins(set, set.Bots[name], settings.ClusterName)}
		tokens := map[string]bool{}
		for _, tn := range slices.Sorted(maps.Keys(set.JoinTokens)) {
			if tok := set.JoinTokens[tn]; tok.Spec.Bot == name {
				b.JoinTokens = append(b.JoinTokens, tok)
				tokens[tn] = true
			}
		}
		ids := map[string]bool{}
		for _, in := range instances {
			if in.Bot == name {
				b.Instances = append(b.Instances, in)
				ids[in.ID] = true
			}
		}
		for _, l := range lockList {
			if (l.Kind == locks.KindBot && l.Target == name) || (l.Kind == locks.KindJoinToken && tokens[l.Target]) ||
				(l.Kind == locks.KindInstance && ids[l.Target]) || l.Bot == name {
				b.Locks = append(b.Locks, l)
			}
		}
		out = append(out, b)
	}
	v.Data = out
	return nil
}

// --- Audit

// pageSize is how many records an audit page shows; scanWindow is how
// many index entries one page reads at most (those of its most selective
// filter): filters that few records match together show what the window
// held and a link to search on, instead of reading every record of the
// first filter (about 15 ms for 5,000 on SQLite; docs/console.md).
const (
	pageSize   = 50
	scanWindow = 5000
)

type auditForm struct {
	Bot, JoinToken, Method, Result, Code, Claim, Since, Until, Serial, Event string
}

type auditData struct {
	Form    auditForm
	Records []store.AuditEvent
	// Next is the query of the next page (escaped); empty on the last.
	Next template.URL
	// ScannedTo is where a page that ran out of its window stopped
	// looking; Next then continues the search from there.
	ScannedTo *store.AuditMark
}

// auditFilter reads the audit page's form into a filter.
func (s *Server) auditFilter(q url.Values) (auditForm, store.AuditFilter, error) {
	form := auditForm{Bot: q.Get("bot"), JoinToken: q.Get("join_token"), Method: q.Get("method"), Result: q.Get("result"),
		Code: q.Get("code"), Claim: q.Get("claim"), Since: q.Get("since"), Until: q.Get("until"), Serial: q.Get("serial"), Event: q.Get("event")}
	f := store.AuditFilter{Bot: form.Bot, JoinToken: form.JoinToken, Method: form.Method, Code: form.Code, Event: form.Event,
		Limit: pageSize, Scan: scanWindow}
	switch form.Result {
	case "":
	case "admitted":
		f.AdmittedOnly = true
	case "refused":
		f.DeniedOnly = true
	default:
		return form, f, badf("result %q is not admitted or refused", form.Result)
	}
	if form.Claim != "" {
		k, val, ok := strings.Cut(form.Claim, "=")
		if !ok || k == "" {
			return form, f, badf("claim %q is not NAME=VALUE, such as repository=acme/app", form.Claim)
		}
		f.Claims = map[string]string{strings.TrimSpace(k): val}
	}
	var err error
	now := s.opts.Now()
	if f.Since, err = parseTime(form.Since, now); err != nil {
		return form, f, badf("since: %v", err)
	}
	if f.Until, err = parseTime(form.Until, now); err != nil {
		return form, f, badf("until: %v", err)
	}
	if form.Serial != "" {
		if f.Serial, err = locks.NormalizeSerial(form.Serial); err != nil {
			return form, f, badf("serial: %v", err)
		}
	}
	if b := q.Get("before"); b != "" {
		if f.BeforeID, err = strconv.ParseInt(b, 10, 64); err != nil || f.BeforeID < 0 {
			return form, f, badf("before %q is not a record id", b)
		}
	}
	return form, f, nil
}

// parseTime reads a time as RFC 3339, as a datetime-local value (UTC), or
// as a duration ago (1h, 30m).
func parseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q is negative; give a duration ago such as 1h", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration ago (1h, 30m) nor a time (2026-01-02T15:04:05Z)", s)
}

func (s *Server) audit(r *http.Request, v *view) error {
	v.Title = "Audit"
	form, f, err := s.auditFilter(r.URL.Query())
	data := &auditData{Form: form}
	v.Data = data
	if err != nil {
		return err
	}
	scan, err := s.opts.Client.AuditScan(r.Context(), f)
	if err != nil {
		return err
	}
	data.Records, data.ScannedTo = scan.Records, scan.ScannedTo
	var next int64
	switch {
	case scan.ScannedTo != nil:
		next = scan.ScannedTo.ID
	case len(data.Records) == pageSize:
		next = data.Records[len(data.Records)-1].ID
	}
	if next > 0 {
		q := r.URL.Query()
		q.Set("before", strconv.FormatInt(next, 10))
		data.Next = template.URL(q.Encode())
	}
	return nil
}

type recordData struct {
	Record *store.AuditEvent
	Claims [][2]string
	Issued []store.IssuedCertificate
}

func (s *Server) record(r *http.Request, v *view) error {
	v.Title = "Audit record"
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return badf("%q is not an audit record's id", r.PathValue("id"))
	}
	list, err := s.opts.Client.Audit(r.Context(), store.AuditFilter{BeforeID: id + 1, Limit: 1})
	if err != nil {
		return err
	}
	if len(list) == 0 || list[0].ID != id {
		return fmt.Errorf("there is no audit record %d (it may have been pruned)", id)
	}
	rec := &list[0]
	d := &recordData{Record: rec}
	for _, k := range slices.Sorted(maps.Keys(rec.Claims)) {
		d.Claims = append(d.Claims, [2]string{k, rec.Claims[k]})
	}
	if d.Issued, err = s.opts.Client.Issued(r.Context(), id); err != nil {
		return err
	}
	v.Title = fmt.Sprintf("Audit record %d", id)
	v.Data = d
	return nil
}

// --- Trusted clusters

type leafView struct {
	Name, Pin string
	Tunnel    store.LeafTunnel
	Seen      bool
}

type clustersData struct {
	ClusterName string
	Leaves      []leafView
	Roots       []*resources.TrustedCluster
	CAs         *admin.CAStatus
}

func (s *Server) clusters(r *http.Request, v *view) error {
	ctx := r.Context()
	v.Title = "Trusted clusters"
	set, err := s.opts.Client.Resources(ctx)
	if err != nil {
		return err
	}
	tunnels, err := s.opts.Client.LeafTunnels(ctx)
	if err != nil {
		return err
	}
	settings, err := s.opts.Client.Settings(ctx)
	if err != nil {
		return err
	}
	cas, err := s.opts.Client.CAStatus(ctx)
	if err != nil {
		return err
	}
	d := &clustersData{ClusterName: settings.ClusterName, CAs: cas}
	for _, name := range slices.Sorted(maps.Keys(set.LeafClusters)) {
		t, seen := tunnels[name]
		d.Leaves = append(d.Leaves, leafView{Name: name, Pin: set.LeafClusters[name].Spec.CAPin, Tunnel: t, Seen: seen})
	}
	for _, name := range slices.Sorted(maps.Keys(set.TrustedClusters)) {
		d.Roots = append(d.Roots, set.TrustedClusters[name])
	}
	v.Data = d
	return nil
}

// --- Actions

// actionKinds are what the console locks and unlocks.
var actionKinds = []string{locks.KindBot, locks.KindInstance, locks.KindJoinToken}

type actionsData struct {
	Kinds []string
	Locks []admin.Lock
	// Form is the action asked for; Confirm is set on the confirmation step.
	Form    actionForm
	Confirm bool
	// Done says what was done.
	Done string
	// Notes are what the lock cannot stop.
	Notes []string
}

type actionForm struct {
	Op, Kind, Target, Reason string
}

func (s *Server) actions(r *http.Request, v *view) error {
	v.Title = "Actions"
	q := r.URL.Query()
	d := &actionsData{Kinds: actionKinds, Form: actionForm{Op: "lock", Kind: q.Get("kind"), Target: q.Get("target")}}
	v.Data = d
	var err error
	d.Locks, err = s.opts.Client.Locks(r.Context())
	return err
}

// act is an action's POST: the first (step=review) shows what it will do
// and asks to confirm; the second (step=confirm) does it.
func (s *Server) act(r *http.Request, v *view) error {
	v.Title = "Actions"
	d := &actionsData{Kinds: actionKinds}
	v.Data = d
	f := r.PostForm
	d.Form = actionForm{Op: f.Get("op"), Kind: f.Get("kind"), Target: strings.TrimSpace(f.Get("target")), Reason: strings.TrimSpace(f.Get("reason"))}
	var err error
	if d.Locks, err = s.opts.Client.Locks(r.Context()); err != nil {
		return err
	}
	if s.opts.ReadOnly {
		return badf("this console is read-only (mbot console --read-only, or a read-only admin identity): it takes no action")
	}
	if d.Form.Op != "lock" && d.Form.Op != "unlock" {
		return badf("op %q is not lock or unlock", d.Form.Op)
	}
	if d.Form.Op == "lock" && !slices.Contains(actionKinds, d.Form.Kind) {
		return badf("%q is not one of %s", d.Form.Kind, strings.Join(actionKinds, ", "))
	}
	if d.Form.Kind == "" {
		return badf("say what to unlock")
	}
	if d.Form.Target == "" {
		return badf("name the %s to %s", d.Form.Kind, d.Form.Op)
	}
	if d.Form.Op == "lock" && d.Form.Reason == "" {
		return badf("give a reason: it is recorded with the lock and shown in every refusal it causes")
	}
	if len(d.Form.Reason) > 512 {
		return badf("the reason is longer than 512 bytes")
	}
	switch f.Get("step") {
	case "review":
		d.Confirm = true
		return nil
	case "confirm":
	default:
		return badf("step %q is not review or confirm", f.Get("step"))
	}
	ctx := r.Context()
	target := d.Form.Kind + "/" + d.Form.Target
	if d.Form.Op == "lock" {
		added, err := s.opts.Client.Lock(ctx, admin.LockRequest{Kind: d.Form.Kind, Target: d.Form.Target, Reason: d.Form.Reason})
		if err != nil {
			return badf("locking %s: %v", target, err)
		}
		d.Done = fmt.Sprintf("Locked %s (by %s).", identity.Printable(target), added.Lock.LockedBy)
		d.Notes = added.Notes
	} else {
		lifted, err := s.opts.Client.UnlockLock(ctx, d.Form.Kind, d.Form.Target)
		if err != nil {
			return badf("unlocking %s: %v", target, err)
		}
		d.Done = fmt.Sprintf("Unlocked %s.", identity.Printable(target))
		_ = lifted
	}
	s.opts.Log.Info("console: "+d.Form.Op, "target", target, "reason", d.Form.Reason)
	d.Form = actionForm{Op: "lock"}
	d.Locks, err = s.opts.Client.Locks(ctx)
	return err
}

// --- templates

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"join": strings.Join,
		// query is a URL's query of names and values, each escaped
		// (template.URL: the template must not escape it again).
		"query": func(kv ...string) template.URL {
			q := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				q.Set(kv[i], kv[i+1])
			}
			return template.URL(q.Encode())
		},
		"details": details,
		// input is a value echoed into a form field: control characters,
		// which no one types, are replaced.
		"input": func(s string) string {
			return strings.Map(func(r rune) rune {
				if unicode.IsControl(r) {
					return unicode.ReplacementChar
				}
				return r
			}, s)
		},
		"printable": identity.Printable,
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/shared.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "bots", "audit", "record", "clusters", "actions", "refused"} {
		t, err := layout.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, "templates/"+name+".html")
		}
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// identifyingClaims are the claims the audit list shows, in this order
// (as mbot audit's table).
var identifyingClaims = [][]string{
	{"repository", "project_path", "vcs_origin", "project_id", "workspace_name", "space_id", "aws_arn", "service_account", "sub"},
	{"ref", "vcs_ref", "branch_name"},
	{"environment"},
}

// details is a record's identifying claims, or its message.
func details(ev store.AuditEvent) [][2]string {
	var out [][2]string
	for _, group := range identifyingClaims {
		for _, k := range group {
			if v := ev.Claims[k]; v != "" {
				out = append(out, [2]string{k, v})
				break
			}
		}
	}
	if len(out) == 0 && ev.Message != "" {
		out = append(out, [2]string{"", ev.Message})
	}
	return out
}
