//go:build linux

package e2e

import (
	"context"
	"fmt"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// hostileClaim is a repository claim a job's OIDC token could carry: markup,
// quotes and control characters. The console must show it as text.
const hostileClaim = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">\"'\x01\x1b[31m"

// chromium finds the browser. It is missing on a developer machine
// without it (the test skips) but never in CI, where .ci/run installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	msg := "chromium is not installed (looked for chromium, chromium-browser, google-chrome in PATH): install the Debian package chromium, or run .ci/run"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	skipreport.Skip(t, msg)
	return ""
}

// artifactsDir is where the test's screenshots go: $MBOT_ARTIFACTS/console,
// or a temporary directory kept after the test (its path is logged).
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MBOT_ARTIFACTS")
	var err error
	if dir != "" {
		dir = filepath.Join(dir, "console")
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "mbot-console-screenshots-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshots in %s", dir)
	return dir
}

// browserErrors collects what the page reports as errors: console.error
// calls, uncaught exceptions and the browser's own log entries of level
// error (a resource that failed to load, a Content-Security-Policy violation).
type browserErrors struct {
	mu   sync.Mutex
	list []string
}

func (b *browserErrors) add(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.list = append(b.list, s)
}

func (b *browserErrors) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.list
	b.list = nil
	return out
}

var consoleURL = regexp.MustCompile(`http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]+`)

// TestConsoleInBrowser runs mbot console against a real authority after
// real joins and drives it with headless Chromium: every page renders
// without errors, the overview counts the joins, the audit filter finds a
// repository's joins, a hostile claim is text, the lock action refuses
// the next join, and requests without the cookie or the CSRF token are refused.
func TestConsoleInBrowser(t *testing.T) {
	browserPath := chromium(t)
	shots := artifactsDir(t)
	c := startCluster(t)
	env := baseEnv(c.home)

	// Real joins: two admitted from acme/app, one refused from
	// acme/other, one refused carrying the hostile claim.
	for range 2 {
		if res := c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenGitHub, filepath.Join(t.TempDir(), "out")); res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
	}
	c.ci.SetGitHubClaim("repository", "acme/other")
	wantRefused(t, c, c.jobEnv(gitHubJob(t, c)), tokenGitHub, "rule_mismatch")
	c.ci.SetGitHubClaim("repository", hostileClaim)
	wantRefused(t, c, c.jobEnv(gitHubJob(t, c)), tokenGitHub, "rule_mismatch")
	c.ci.SetGitHubClaim("repository", "acme/app")

	adminDir := filepath.Join(filepath.Dir(c.config), "data", "admin")
	port := freePort(t)
	cons := startBackground(t, env, true, mbotBin, "console", "--auth", adminDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	waitForPort(t, fmt.Sprintf("127.0.0.1:%d", port), cons.exited, cons.logs)
	var tokenURL string
	for deadline := time.Now().Add(10 * time.Second); tokenURL == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		tokenURL = consoleURL.FindString(cons.logs.String())
	}
	if tokenURL == "" {
		t.Fatalf("mbot console printed no URL:\n%s", cons.logs)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	// Without the cookie, nothing.
	for _, path := range []string{"/", "/audit", "/bots"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), botName) {
			t.Errorf("GET %s without the cookie: %d; want 401 showing nothing", path, resp.StatusCode)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserPath), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 1000),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	errs := &browserErrors{}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				errs.add(m.String() + " " + m.URL)
			}
		}
	}()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(actx, actions...); err != nil {
			// What the page showed, to see why.
			if shot, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
				_ = os.WriteFile(filepath.Join(shots, what+"-failed.png"), shot, 0o644)
			}
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("%s: %v\nthe page shows:\n%s", what, err, body)
		}
	}
	// do runs actions on the page, then checks it rendered without errors
	// and screenshots it.
	do := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		run(name, append(actions, chromedp.WaitReady(chromedp.CSS("main")))...)
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("%s: screenshot: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the console's messages arrive after the load
		if list := errs.take(); len(list) > 0 {
			t.Errorf("%s: the browser reported errors:\n%s", name, strings.Join(list, "\n"))
		}
	}
	visit := func(name, u string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		do(name, append([]chromedp.Action[chromedp.Void]{chromedp.Navigate(u), chromedp.WaitReady(chromedp.CSS("main"))}, actions...)...)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		if err != nil {
			t.Fatalf("reading %s's %s: %v", sel, name, err)
		}
		return v.Value
	}
	evalInt := func(js string) int {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	evalStrings := func(js string) []string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}

	// The token URL leads to the overview, without the token.
	visit("overview", tokenURL)
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if location != base+"/" {
		t.Errorf("after the token exchange the address is %q, want %q", location, base+"/")
	}
	cookieVisible, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil || cookieVisible != "" {
		t.Errorf("the page's script can read cookies %q: the session cookie is not HttpOnly", cookieVisible)
	}
	admitted, refused := attr("#chart-hour", "data-admitted"), attr("#chart-hour", "data-refused")
	if admitted != "2" || refused != "2" {
		t.Errorf("the hour chart counts %s admitted and %s refused joins, want the 2 and 2 just made", admitted, refused)
	}
	if bars := evalInt(`[...document.querySelectorAll('#chart-hour g.bar')].reduce((n, g) => n + (+g.dataset.admitted) + (+g.dataset.refused), 0)`); bars != 4 {
		t.Errorf("the hour chart's bars add up to %d joins, want 4", bars)
	}
	if got := text("#codes"); !strings.Contains(got, "rule_mismatch") {
		t.Errorf("refusals by code: %q", got)
	}
	if got := text("#projects"); !strings.Contains(got, "repository=acme/app") {
		t.Errorf("top projects: %q", got)
	}

	visit("bots", base+"/bots")
	if got := text("#bot-" + botName); !strings.Contains(got, tokenGitHub) || !strings.Contains(got, roleName) {
		t.Errorf("the bots page: %q", got)
	}
	visit("clusters", base+"/clusters")
	if got := text("#cas"); !strings.Contains(got, "standby") {
		t.Errorf("the CA table: %q", got)
	}

	// The audit filter: a claim, typed into the form.
	visit("audit-filtered", base+"/audit",
		chromedp.SendKeys(chromedp.CSS(`input[name="claim"]`), "repository=acme/app"),
		chromedp.Submit(chromedp.CSS(`#filters`)),
		chromedp.WaitVisible(chromedp.CSS(`#records`)))
	rows := evalStrings(`[...document.querySelectorAll('#records tbody tr')].map(r => r.innerText)`)
	if len(rows) != 2 {
		t.Errorf("repository=acme/app finds %d records, want the 2 admitted joins:\n%s", len(rows), strings.Join(rows, "\n"))
	}
	for _, r := range rows {
		if !strings.Contains(r, "acme/app") || !strings.Contains(r, "admitted") {
			t.Errorf("a record of the filter: %q", r)
		}
	}

	// The hostile claim is text: in the list and on its record's page.
	visit("audit-refused", base+"/audit?result=refused&event=join")
	pwned, scripts := evalInt(`window.__pwned || 0`), evalInt(`document.querySelectorAll('script, main img').length`)
	details := evalStrings(`[...document.querySelectorAll('#records td.details')].map(d => d.textContent)`)
	if pwned != 0 || scripts != 0 {
		t.Errorf("the hostile claim ran or made elements: __pwned=%d, %d script/img elements", pwned, scripts)
	}
	if !strings.Contains(strings.Join(details, "\n"), `<script>window.__pwned=1</script>`) ||
		!strings.Contains(strings.Join(details, "\n"), `\x01\x1b[31m`) {
		t.Errorf("the hostile claim is not shown as text (control characters escaped):\n%s", strings.Join(details, "\n"))
	}
	visit("audit-record", base+attr(`#records tbody tr td a`, "href"))
	pwned = evalInt(`window.__pwned || 0`)
	if got := text("#claims"); pwned != 0 || !strings.Contains(got, "<img src=x onerror=") {
		t.Errorf("the record page: __pwned=%d, claims %q", pwned, got)
	}

	// A serial of an admitted join links to that join.
	visit("audit-admitted", base+"/audit?result=admitted&event=join")
	visit("audit-serial", base+attr(`a.serial`, "href"))
	rows = evalStrings(`[...document.querySelectorAll('#records tbody tr')].map(r => r.innerText)`)
	if len(rows) != 1 || !strings.Contains(rows[0], "admitted") {
		t.Errorf("the serial's link finds %q, want its one join", rows)
	}

	// A POST without the CSRF token, with the session's cookie, is refused.
	got, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	cookies := got.Cookies
	if err != nil || len(cookies) != 1 || !cookies[0].HTTPOnly || cookies[0].SameSite != network.CookieSameSiteStrict {
		t.Fatalf("the session cookie: %+v, %v", cookies, err)
	}
	form := url.Values{"step": {"confirm"}, "op": {"lock"}, "kind": {"bot"}, "target": {botName}, "reason": {"forged"}}
	req, _ := http.NewRequest(http.MethodPost, base+"/actions", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookies[0].Name, Value: cookies[0].Value})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a POST without the CSRF token: %d, want 403", resp.StatusCode)
	}
	if res := c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenGitHub, filepath.Join(t.TempDir(), "out")); res.code != 0 {
		t.Fatalf("after the refused POST the bot is locked: %s", res)
	}

	// The lock action, confirmed in the browser, refuses the next join.
	visit("actions-review", base+"/actions?kind=bot&target="+botName,
		chromedp.SendKeys(chromedp.CSS(`input[name="reason"]`), "incident 7: runner compromised"),
		chromedp.Click(chromedp.CSS(`#review-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-button`)))
	// The review step locked nothing.
	if res := c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenGitHub, filepath.Join(t.TempDir(), "out")); res.code != 0 {
		t.Fatalf("after the review step the bot is locked: %s", res)
	}
	do("actions-done", chromedp.Click(chromedp.CSS(`#confirm-button`)), chromedp.WaitVisible(chromedp.CSS(`#done`)))
	if got := text("#done"); !strings.Contains(got, "Locked bot/"+botName) || !strings.Contains(got, "admin admin") {
		t.Errorf("after confirming: %q", got)
	}
	wantRefused(t, c, c.jobEnv(gitHubJob(t, c)), tokenGitHub, "bot_locked", "incident 7")
	out := mustMbot(t, env, "audit", "--config", c.config, "-o", "json", "--limit", "20").stdout
	if !strings.Contains(out, "incident 7: runner compromised") || !strings.Contains(out, "admin admin from 127.0.0.1") {
		t.Errorf("the lock is not in the audit log with the admin's name:\n%s", out)
	}
	visit("bots-locked", base+"/bots")
	if got := text("#bot-" + botName); !strings.Contains(got, "incident 7") {
		t.Errorf("the bots page does not show the lock: %q", got)
	}
	t.Logf("screenshots: %s (%s)", shots, strconv.Quote(strings.Join(listDir(t, shots), " ")))
}

func listDir(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
