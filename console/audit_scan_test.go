package console_test

import (
	"html"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/console"
)

var searchOlder = regexp.MustCompile(`id="search-older" href="/audit\?([^"]+)"`)

// TestAuditPageSearchesOlder: a page of two filters that the newest
// ScanWindow records of the first do not match together stops there, says
// so, and links to search on; the link finds the older match.
func TestAuditPageSearchesOlder(t *testing.T) {
	e := start(t, true)
	st := e.auth.Authority.Store()
	ctx := t.Context()
	refused := &store.AuditEvent{Event: "join", Allowed: false, Bot: "deployer", Code: "bot_locked", JoinToken: "github-deploy", Method: "github",
		Claims: map[string]string{"repository": "acme/the-old-refusal"}}
	if err := st.Audit(ctx, refused); err != nil {
		t.Fatal(err)
	}
	// Newer than it, a window and more of each filter but none of both:
	// deployer's admitted joins and another bot's refusals. Concurrent
	// writes share commits (the store batches them).
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 2*(console.ScanWindow+10); i += 8 {
				ev := &store.AuditEvent{Event: "join", Allowed: true, Bot: "deployer", JoinToken: "github-deploy", Method: "github",
					Claims: map[string]string{"repository": "acme/app", "run_id": strconv.Itoa(i)}}
				if i%2 == 1 {
					ev.Allowed, ev.Bot, ev.Code = false, "other", "rule_mismatch"
				}
				if err := st.Audit(ctx, ev); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	b := e.login(t)

	resp, body := get(t, b, e.srv.URL+"/audit?bot=deployer&result=refused")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="scanned-to"`) || strings.Contains(body, "the-old-refusal") || strings.Contains(body, `id="no-records"`) {
		t.Fatalf("bot=deployer&result=refused: %d; want 200 saying how far back it searched, without the old refusal nor \"No records match\":\n%s", resp.StatusCode, body)
	}
	m := searchOlder.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link to search older records:\n%s", body)
	}
	resp, body = get(t, b, e.srv.URL+"/audit?"+html.UnescapeString(m[1]))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "the-old-refusal") || strings.Contains(body, `id="scanned-to"`) {
		t.Errorf("searching on (%s): %d; want the old refusal and the end of the log:\n%s", m[1], resp.StatusCode, body)
	}
	// A page that fills up links to the next page, as before.
	_, body = get(t, b, e.srv.URL+"/audit?bot=deployer&result=admitted")
	if !strings.Contains(body, `id="next"`) || strings.Contains(body, `id="scanned-to"`) {
		t.Errorf("bot=deployer&result=admitted: want a next page link and no search on:\n%.3000s", body)
	}
	// mbot audit and the admin API's list read to the end whatever the window.
	list, err := st.ListAudit(ctx, store.AuditFilter{Bot: "deployer", DeniedOnly: true, Scan: 10})
	if err != nil || len(list) != 1 || list[0].Claims["repository"] != "acme/the-old-refusal" {
		t.Errorf("ListAudit of bot=deployer&result=refused: %v, %v; want the old refusal", list, err)
	}
}
