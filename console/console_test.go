package console_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/console"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

const botsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec: {logins: [ci], db_users: [app]}
---
kind: bot
version: v1
metadata: {name: deployer}
spec: {roles: [deploy]}
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[1]s
    allow: [{repository: acme/app}]
`

// env is a real authority and a console on it through the admin API.
type env struct {
	auth    *authoritytest.Env
	console *console.Server
	srv     *httptest.Server
}

func start(t *testing.T, readOnly bool) *env {
	t.Helper()
	e := authoritytest.Start(t, "console.test", botsYAML, "")
	return startOn(t, e, filepath.Join(e.DataDir, authority.AdminDirName), readOnly)
}

// startOn is a console on e through the admin identity in adminDir.
func startOn(t *testing.T, e *authoritytest.Env, adminDir string, readOnly bool) *env {
	t.Helper()
	client, err := admin.OpenRemote(adminDir, e.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	srv := httptest.NewUnstartedServer(nil)
	c, err := console.New(console.Options{Client: client, ReadOnly: readOnly, Addr: srv.Listener.Addr().String(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = c.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return &env{auth: e, console: c, srv: srv}
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login exchanges the console's one-time token for a session cookie.
func (e *env) login(t *testing.T) *http.Client {
	t.Helper()
	b := browser(t)
	resp, _ := get(t, b, e.console.URL())
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("the token URL answered %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	return b
}

func TestSessionAndCSRF(t *testing.T) {
	e := start(t, false)
	anon := browser(t)
	for _, path := range []string{"/", "/bots", "/audit", "/audit/1", "/clusters", "/actions"} {
		resp, body := get(t, anon, e.srv.URL+path)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "deployer") {
			t.Errorf("GET %s without the cookie: %d (bot named: %v); want 401 with nothing of the authority's", path, resp.StatusCode, strings.Contains(body, "deployer"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if resp, _ := get(t, anon, e.srv.URL+"/?token=guess"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d, want 401", resp.StatusCode)
	}
	tokenURL := e.console.URL()
	b := browser(t)
	resp, _ := get(t, b, tokenURL)
	cookie := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Fatalf("the token exchange: %d, Set-Cookie %q; want 303 and an HttpOnly, SameSite=Strict cookie", resp.StatusCode, cookie)
	}
	// The token works once.
	if resp, _ := get(t, browser(t), tokenURL); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the token used a second time: %d, want 401", resp.StatusCode)
	}
	resp, body := get(t, b, e.srv.URL+"/bots")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "deployer") || !strings.Contains(body, "db_users") {
		t.Fatalf("GET /bots with the session: %d\n%s", resp.StatusCode, body)
	}
	if xfo := resp.Header.Get("X-Frame-Options"); xfo != "DENY" {
		t.Errorf("X-Frame-Options %q", xfo)
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "style=") {
		t.Errorf("a page has inline script or style:\n%s", body)
	}
	// Another Host (DNS rebinding) is refused even with the cookie.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/bots", nil)
	req.Host = "attacker.example:80"
	if resp, err := b.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a request for another host: %v %v", resp.StatusCode, err)
	}

	_, page := get(t, b, e.srv.URL+"/actions")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the actions page:\n%s", page)
	}
	lock := url.Values{"step": {"confirm"}, "op": {"lock"}, "kind": {"bot"}, "target": {"deployer"}, "reason": {"incident 42"}}
	if resp, _ := post(t, b, e.srv.URL+"/actions", lock, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an action without its CSRF token: %d, want 403", resp.StatusCode)
	}
	lock.Set("csrf", "forged")
	if resp, _ := post(t, b, e.srv.URL+"/actions", lock, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an action with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	lock.Set("csrf", m[1])
	if resp, _ := post(t, b, e.srv.URL+"/actions", lock, http.Header{"Origin": {"http://attacker.example"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an action from another origin: %d, want 403", resp.StatusCode)
	}
	if resp, _ := post(t, anon, e.srv.URL+"/actions", lock, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an action without the cookie: %d, want 401", resp.StatusCode)
	}
	if _, ok := e.auth.Authority.Locks().Lookup(locks.KindBot, "deployer", time.Now()); ok {
		t.Fatal("a refused action locked the bot")
	}
	// The review step changes nothing; the confirmation locks, as the admin.
	lock.Set("step", "review")
	resp, body = post(t, b, e.srv.URL+"/actions", lock, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="confirm-button"`) {
		t.Fatalf("review: %d\n%s", resp.StatusCode, body)
	}
	if _, ok := e.auth.Authority.Locks().Lookup(locks.KindBot, "deployer", time.Now()); ok {
		t.Fatal("the review step locked the bot")
	}
	lock.Set("step", "confirm")
	resp, body = post(t, b, e.srv.URL+"/actions", lock, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="done"`) {
		t.Fatalf("confirm: %d\n%s", resp.StatusCode, body)
	}
	e.auth.Authority.Refresh(t.Context())
	l, ok := e.auth.Authority.Locks().Lookup(locks.KindBot, "deployer", time.Now())
	if !ok || l.Reason != "incident 42" || !strings.HasPrefix(l.LockedBy, "admin admin") {
		t.Fatalf("after the confirmation: lock %+v, %v; want bot/deployer locked by the admin with the reason", l, ok)
	}
}

func TestReadOnly(t *testing.T) {
	t.Run("--read-only", func(t *testing.T) { checkReadOnly(t, start(t, true)) })
	// A console on a read-only admin identity is read-only without the flag.
	t.Run("read-only admin identity", func(t *testing.T) {
		auth := authoritytest.Start(t, "console.test", botsYAML, "")
		signed, err := auth.Authority.SignAdmin(t.Context(), authority.AdminSignRequest{Admin: "viewer", ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "viewer")
		if err := identity.WriteDir(dir, signed.Files); err != nil {
			t.Fatal(err)
		}
		e := startOn(t, auth, dir, false)
		b := checkReadOnly(t, e)
		_, page := get(t, b, e.srv.URL+"/audit?event=sign.admin")
		if !strings.Contains(page, "read-only admin identity") {
			t.Errorf("the audit page through a read-only identity does not show its signing:\n%s", page)
		}
	})
}

// checkReadOnly: e's console offers no action and refuses one; it returns
// the logged-in browser.
func checkReadOnly(t *testing.T, e *env) *http.Client {
	b := e.login(t)
	_, page := get(t, b, e.srv.URL+"/actions")
	if strings.Contains(page, "lock-form") || !strings.Contains(page, "read-only") {
		t.Errorf("the read-only actions page offers a lock:\n%s", page)
	}
	_, bots := get(t, b, e.srv.URL+"/bots")
	if strings.Contains(bots, "lock…") {
		t.Error("the read-only bots page links to actions")
	}
	if csrfField.MatchString(page) {
		t.Errorf("the read-only actions page has a form:\n%s", page)
	}
	resp, body := post(t, b, e.srv.URL+"/actions", url.Values{"step": {"confirm"}, "op": {"lock"}, "kind": {"bot"}, "target": {"deployer"}, "reason": {"x"}}, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Errorf("a POST to a read-only console: %d\n%s", resp.StatusCode, body)
	}
	if _, ok := e.auth.Authority.Locks().Lookup(locks.KindBot, "deployer", time.Now()); ok {
		t.Fatal("a read-only console locked the bot")
	}
	return b
}

// TestHostileValuesAreText: claims and names chosen by a caller reach
// the pages as text.
func TestHostileValuesAreText(t *testing.T) {
	e := start(t, false)
	hostile := "<script>alert(1)</script>\"'\x01\x1b[31m"
	ev := &store.AuditEvent{Event: "join", Allowed: false, Code: "rule_mismatch", JoinToken: "github-deploy", Method: "github",
		Claims: map[string]string{"repository": hostile, "<img src=x>": "k"}, Message: hostile}
	if err := e.auth.Authority.Store().Audit(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	b := e.login(t)
	list, err := e.auth.Authority.Store().ListAudit(t.Context(), store.AuditFilter{Code: "rule_mismatch", Limit: 1})
	if err != nil || len(list) != 1 {
		t.Fatal(list, err)
	}
	for _, path := range []string{"/audit", "/audit?claim=" + url.QueryEscape("repository="+hostile), "/audit/" + strconv.FormatInt(list[0].ID, 10), "/"} {
		resp, body := get(t, b, e.srv.URL+path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, resp.StatusCode, body)
		}
		if strings.Contains(body, "<script") || strings.Contains(body, "<img") || strings.ContainsAny(body, "\x01\x1b") {
			t.Errorf("GET %s: the hostile value reached the page as markup or control characters:\n%s", path, body)
		}
		if path != "/" && !strings.Contains(body, `&lt;script&gt;alert(1)&lt;/script&gt;`) {
			t.Errorf("GET %s: the hostile value is not shown as text:\n%s", path, body)
		}
	}
}

// TestBrowserDriverNotInBinary: chromedp drives the browser tests only; the
// mbot binary does not link it.
func TestBrowserDriverNotInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/mbot-dev/mbot").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/mbot-dev/mbot/console") {
		t.Fatal("the mbot binary does not link the console: go list -deps is not listing what it links")
	}
	for _, dep := range deps {
		if strings.HasPrefix(dep, "github.com/chromedp/") {
			t.Errorf("the mbot binary links %s", dep)
		}
	}
}
