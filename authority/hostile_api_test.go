package authority_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
	"golang.org/x/crypto/ssh"
)

// hostileBots is the authority of the hostile-input tests: one github join
// token for acme/app.
const hostileBots = `kind: role
version: v1
metadata: {name: deploy}
spec:
  logins: [deploy]
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy]
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
`

// from returns an HTTP client of the authority in env that connects from
// the loopback address ip, so that each caller has an address of its own
// for the refusal limiter.
func from(t *testing.T, env *authoritytest.Env, ip string) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(env.Authority.CAs().TLSCert)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:     dialer.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// answer is one answer of the authority's API.
type answer struct {
	status     int
	retryAfter string
	body       []byte
	refusal    identity.ErrorResponse
}

func post(t *testing.T, c *http.Client, env *authoritytest.Env, path string, body []byte) answer {
	t.Helper()
	resp, err := c.Post(env.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: data}
	_ = json.Unmarshal(data, &a.refusal)
	return a
}

// request is a join request for github-deploy with one output of fresh
// keys and a proof from the issuer, for a case to spoil.
func request(t *testing.T, iss *simci.Issuer, edit func(r *identity.JoinRequest)) []byte {
	t.Helper()
	r := joinRequest("github-deploy", "github", githubToken(t, iss, nil), time.Hour, newOutput(t, "identity"))
	if edit != nil {
		edit(r)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func dataDirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// maxRecord is what one stored audit record may take: the bounds of
// store/bound.go with room for JSON escapes.
const maxRecord = 16 << 10

// TestHostileJoinRequests sends what an attacker who can reach the API
// would, each from an address of its own, to an authority served over
// loopback TLS. Every case must be refused with a stable 4xx code and no
// certificate, leave one bounded audit record, and the authority must still
// admit a good join afterwards.
func TestHostileJoinRequests(t *testing.T) {
	env := authoritytest.Start(t, "acme", hostileBots, "")
	iss := env.Issuer
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakSSH, err := ssh.NewPublicKey(&rsa1024.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	outputs := func(names ...string) func(r *identity.JoinRequest) {
		return func(r *identity.JoinRequest) {
			r.Outputs = nil
			for _, n := range names {
				r.Outputs = append(r.Outputs, newOutput(t, n).req)
			}
		}
	}
	seventeen := make([]string, 17)
	for i := range seventeen {
		seventeen[i] = fmt.Sprintf("out%d", i)
	}
	manyClaims := func(c map[string]any) {
		for i := range 2000 {
			c[fmt.Sprintf("claim_%04d", i)] = "v"
		}
		c["repository"] = "evil/app"
	}
	keyCodes := []identity.ErrorCode{identity.CodeBadRequest, identity.CodeUnsupportedKey}

	cases := []struct {
		name      string
		body      []byte
		wantCodes []identity.ErrorCode // the first is the one today; a later one is accepted too
	}{
		{"empty body", nil, []identity.ErrorCode{identity.CodeBadRequest}},
		{"not JSON", []byte("GET / HTTP/1.1\r\n\x1b[2J"), []identity.ErrorCode{identity.CodeBadRequest}},
		{"truncated JSON", request(t, iss, nil)[:100], []identity.ErrorCode{identity.CodeBadRequest}},
		{"JSON of another shape", []byte(`{"join_token":["github-deploy"],"outputs":"all"}`), []identity.ErrorCode{identity.CodeBadRequest}},
		{"300 KB body", request(t, iss, func(r *identity.JoinRequest) { r.Outputs[0].Roles = []string{strings.Repeat("r", 300<<10)} }),
			[]identity.ErrorCode{identity.CodeBadRequest}},
		{"250 KB join_token", request(t, iss, func(r *identity.JoinRequest) { r.JoinToken = strings.Repeat("github-deploy", 250<<10/13) }),
			[]identity.ErrorCode{identity.CodeBadRequest}},
		{"join_token with a line break and escapes", request(t, iss, func(r *identity.JoinRequest) {
			r.JoinToken = "github-deploy\n2026-01-01T00:00:00Z  join  allowed\r\x1b[2J"
		}), []identity.ErrorCode{identity.CodeBadRequest}},
		{"join_token with a NUL", request(t, iss, func(r *identity.JoinRequest) { r.JoinToken = "github-deploy\x00" }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"join_token in upper case", request(t, iss, func(r *identity.JoinRequest) { r.JoinToken = "GitHub-Deploy" }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"unknown method", request(t, iss, func(r *identity.JoinRequest) { r.Method = "travis" }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"method with control characters", request(t, iss, func(r *identity.JoinRequest) { r.Method = "github\r\n\x1b[31m" }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"250 KB method", request(t, iss, func(r *identity.JoinRequest) { r.Method = strings.Repeat("m", 250<<10) }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"17 outputs", request(t, iss, outputs(seventeen...)), []identity.ErrorCode{identity.CodeBadRequest}},
		{"duplicate output names", request(t, iss, outputs("identity", "identity")), []identity.ErrorCode{identity.CodeBadRequest}},
		{"output name with a line break", request(t, iss, outputs("identity\nbot=admin")), []identity.ErrorCode{identity.CodeBadRequest}},
		{"output name of 250 KB", request(t, iss, outputs(strings.Repeat("o", 250<<10))), []identity.ErrorCode{identity.CodeBadRequest}},
		{"SSH key that is not one", request(t, iss, func(r *identity.JoinRequest) { r.Outputs[0].SSHPublicKey = "ssh-ed25519 AAAA\x1b[2J" }), keyCodes},
		{"RSA-1024 SSH key", request(t, iss, func(r *identity.JoinRequest) { r.Outputs[0].SSHPublicKey = string(ssh.MarshalAuthorizedKey(weakSSH)) }), keyCodes},
		{"TLS key that is not PEM", request(t, iss, func(r *identity.JoinRequest) { r.Outputs[0].TLSPublicKey = "not PEM" }), keyCodes},
		{"negative ttl", request(t, iss, func(r *identity.JoinRequest) { r.TTLSeconds = -1 }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"huge ttl", request(t, iss, func(r *identity.JoinRequest) { r.TTLSeconds = 1 << 62 }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"no proof", request(t, iss, func(r *identity.JoinRequest) { r.Proof = "" }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"proof of 200 KB", request(t, iss, func(r *identity.JoinRequest) { r.Proof = strings.Repeat("a", 200<<10) }), []identity.ErrorCode{identity.CodeBadRequest}},
		{"proof that is not a JWT", request(t, iss, func(r *identity.JoinRequest) { r.Proof = "not-a-jwt\n\x1b[2J" }), []identity.ErrorCode{identity.CodeProofInvalid}},
		{"JWT with a 1 MB claim", request(t, iss, func(r *identity.JoinRequest) {
			r.Proof = githubToken(t, iss, func(c map[string]any) { c["repository"] = strings.Repeat("evil/", 1<<20/5) })
		}), []identity.ErrorCode{identity.CodeBadRequest}},
		{"signed JWT with a 12 KB claim of escapes", request(t, iss, func(r *identity.JoinRequest) {
			r.Proof = githubToken(t, iss, func(c map[string]any) { c["repository"] = "evil/" + strings.Repeat("x\x1b[2J\n", 2<<10) })
		}), []identity.ErrorCode{identity.CodeRuleMismatch}},
		{"signed JWT with 2000 claims", request(t, iss, func(r *identity.JoinRequest) { r.Proof = githubToken(t, iss, manyClaims) }),
			[]identity.ErrorCode{identity.CodeRuleMismatch}},
		{"unknown join token", request(t, iss, func(r *identity.JoinRequest) { r.JoinToken = "github-typo" }), []identity.ErrorCode{identity.CodeUnknownJoinToken}},
	}
	truncated := map[string]bool{"250 KB join_token": true, "250 KB method": true,
		"signed JWT with a 12 KB claim of escapes": true} // github keeps only its identifying claims, so 2000 others are not recorded
	records := func() int {
		evs, err := env.Authority.Store().ListAudit(t.Context(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := from(t, env, fmt.Sprintf("127.0.1.%d", i+1))
			before := records()
			got := post(t, c, env, identity.PathJoin, tc.body)
			if got.status < 400 || got.status >= 500 {
				t.Fatalf("status %d, want 4xx: %s", got.status, got.body)
			}
			if !slicesContains(tc.wantCodes, got.refusal.Code) || got.status != got.refusal.Code.HTTPStatus() {
				t.Errorf("status %d code %q, want one of %q: %s", got.status, got.refusal.Code, tc.wantCodes, got.refusal.Message)
			}
			if got.refusal.Message == "" {
				t.Error("the refusal carries no message")
			}
			for _, cert := range []string{"BEGIN CERTIFICATE", "cert-v01@openssh.com", "ssh_certificate"} {
				if bytes.Contains(got.body, []byte(cert)) {
					t.Errorf("the refusal carries a certificate (%s)", cert)
				}
			}
			if n := records() - before; n != 1 {
				t.Errorf("%d audit records added, want one", n)
			}
			ev := lastAudit(t, env.Authority)
			raw, _ := json.Marshal(ev)
			if ev.Allowed || ev.Code != string(got.refusal.Code) || len(raw) > maxRecord {
				t.Errorf("audit record allowed=%t code %q of %d bytes; want the refusal in at most %d bytes", ev.Allowed, ev.Code, len(raw), maxRecord)
			}
			if !strings.HasPrefix(ev.Remote, fmt.Sprintf("127.0.1.%d:", i+1)) {
				t.Errorf("audit record remote %q", ev.Remote)
			}
			// What the caller chose beyond the bounds is cut, and the record says how much.
			if cut := truncated[tc.name]; cut != (ev.TruncatedBytes > 0) {
				t.Errorf("truncated_bytes %d; want a cut recorded: %t", ev.TruncatedBytes, cut)
			}
		})
	}

	// No proof reaches the audit log: a JWT's signature is the part that
	// makes it usable, and no record may hold one.
	t.Run("no proof recorded", func(t *testing.T) {
		evs, err := env.Authority.Store().ListAudit(t.Context(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		all, err := json.Marshal(evs)
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, tc := range cases {
			var r identity.JoinRequest
			if json.Unmarshal(tc.body, &r) != nil || strings.Count(r.Proof, ".") != 2 {
				continue
			}
			// Any 40 characters of the encoded payload or signature would
			// be a piece of the proof: claims are recorded decoded, never encoded.
			parts := strings.Split(r.Proof, ".")
			if len(parts[1]) < 40 || len(parts[2]) < 40 {
				continue
			}
			checked++
			for _, probe := range []string{parts[1][:40], parts[2][len(parts[2])-40:]} {
				if bytes.Contains(all, []byte(probe)) {
					t.Errorf("case %q: the audit log holds a piece of the proof (%s...)", tc.name, probe[:8])
				}
			}
		}
		if checked == 0 {
			t.Fatal("no signed proof among the cases to check")
		}
	})

	t.Run("still serving", func(t *testing.T) {
		api, err := client.NewAPI(env.URL, env.Pin)
		if err != nil {
			t.Fatal(err)
		}
		defer api.CloseIdleConnections()
		var r identity.JoinRequest
		if err := json.Unmarshal(request(t, iss, nil), &r); err != nil {
			t.Fatal(err)
		}
		resp, err := api.Join(t.Context(), &r)
		if err != nil {
			t.Fatalf("a good join after the hostile ones: %v", err)
		}
		if len(resp.Outputs) != 1 || resp.Outputs[0].SSHCertificate == "" {
			t.Errorf("admitted without certificates: %+v", resp)
		}
	})
}

func slicesContains(codes []identity.ErrorCode, c identity.ErrorCode) bool {
	for _, x := range codes {
		if x == c {
			return true
		}
	}
	return false
}

// TestRefusalsGrowDataDirBoundedly sends refusals carrying a 250 KB
// join_token and checks what each adds to data_dir (the SQLite database
// and its WAL): 534 KB each before records were bounded.
func TestRefusalsGrowDataDirBoundedly(t *testing.T) {
	env := authoritytest.Start(t, "acme", hostileBots, "")
	hostile := request(t, env.Issuer, func(r *identity.JoinRequest) { r.JoinToken = strings.Repeat("a", 250<<10) })
	honest := request(t, env.Issuer, func(r *identity.JoinRequest) { r.JoinToken = "github-typo" })
	const n = 100
	perRefusal := func(body []byte, subnet int) int64 {
		before := dataDirSize(t, env.DataDir)
		for i := range n {
			// Each from its own address, so that the limiter does not step in.
			post(t, from(t, env, fmt.Sprintf("127.0.%d.%d", subnet, i+1)), env, identity.PathJoin, body)
		}
		return (dataDirSize(t, env.DataDir) - before) / n
	}
	base := perRefusal(honest, 4)
	got := perRefusal(hostile, 5)
	t.Logf("data_dir grows %d bytes per refusal with a 250 KB join_token, %d per refusal of an unknown join token", got, base)
	if got > 32<<10 {
		t.Errorf("a refusal with a 250 KB join_token adds %d bytes to data_dir; want at most 32 KB", got)
	}
}

// TestRefusalsRateLimited sends 30 bad requests from one address: after the
// burst they are still refused with their own code but answered in turn
// and recorded as one summary, a good join from the address is admitted, and
// another address is served; admitted joins from one address never draw
// from its budget.
func TestRefusalsRateLimited(t *testing.T) {
	env := authoritytest.Start(t, "acme", hostileBots, "")
	attacker := from(t, env, "127.0.2.1")
	bad := request(t, env.Issuer, func(r *identity.JoinRequest) { r.JoinToken = "github-typo" })
	refused := 0
	for i := range 20 { // the burst (docs/security-model.md)
		got := post(t, attacker, env, identity.PathJoin, bad)
		if got.refusal.Code != identity.CodeUnknownJoinToken {
			t.Fatalf("request %d: %d %s", i+1, got.status, got.body)
		}
		refused++
	}
	// The rest at once: answered in turn, 15 a second over all limited
	// addresses (guard.go), not at once.
	const rest = 10
	start := time.Now()
	answers := make(chan answer, rest)
	for range rest {
		go func() { answers <- postNoFatal(attacker, env, identity.PathJoin, bad) }()
	}
	summarised := 0
	for range rest {
		got := <-answers
		if got.refusal.Code == identity.CodeUnknownJoinToken {
			summarised++
		} else {
			t.Errorf("a refusal past the burst: %d %s", got.status, got.body)
		}
	}
	if held, paced := time.Since(start), (rest-1)*time.Second/15; held < paced {
		t.Errorf("%d refusals past the burst were answered in %s; they are answered 15 a second, in %s at least", rest, held, paced)
	}
	// A good join from the limited address is admitted.
	if got := post(t, attacker, env, identity.PathJoin, request(t, env.Issuer, nil)); got.status != http.StatusOK {
		t.Errorf("a good join from the limited address: %d %s, want 200", got.status, got.body)
	}

	t.Run("another address is served", func(t *testing.T) {
		got := post(t, from(t, env, "127.0.2.2"), env, identity.PathJoin, request(t, env.Issuer, nil))
		if got.status != http.StatusOK {
			t.Fatalf("%d %s", got.status, got.body)
		}
	})

	t.Run("one summary record", func(t *testing.T) {
		env.Authority.RecordBursts(context.Background())
		evs, err := env.Authority.Store().ListAudit(t.Context(), store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var summaries []store.AuditEvent
		perRequest := 0
		for _, ev := range evs {
			switch {
			case ev.Event == "refusals.summary":
				summaries = append(summaries, ev)
			case ev.Event == "join" && !ev.Allowed && strings.HasPrefix(ev.Remote, "127.0.2.1:"):
				perRequest++
			}
		}
		if len(summaries) != 1 {
			t.Fatalf("%d summary records, want one: %+v", len(summaries), summaries)
		}
		s := summaries[0]
		// Tokens earned while the first 20 were sent (2 a second, before the
		// burst began) may let a few of the rest be recorded one by one.
		n, _ := strconv.Atoi(s.Claims["summarised"])
		if s.Remote != "127.0.2.1" || s.Code != string(identity.CodeRateLimited) || n+perRequest != refused+summarised || n < rest-4 ||
			!strings.Contains(s.Claims["codes"], "unknown_join_token=") || !strings.Contains(s.Claims["routes"], "POST /v1/join=") ||
			s.Claims["first"] == "" || s.Claims["last"] == "" {
			t.Errorf("summary %+v with %d per-request records, want the %d refusals of 127.0.2.1 past the burst and the window", s, perRequest, rest)
		}
	})

	t.Run("admitted joins do not draw", func(t *testing.T) {
		fleet := from(t, env, "127.0.2.3")
		for i := range 25 {
			if got := post(t, fleet, env, identity.PathJoin, request(t, env.Issuer, nil)); got.status != http.StatusOK {
				t.Fatalf("admitted join %d: %d %s", i+1, got.status, got.body)
			}
		}
		// The fleet's budget is whole: a misconfigured job is refused and recorded.
		for i := range 5 {
			start := time.Now()
			if got := post(t, fleet, env, identity.PathJoin, bad); got.refusal.Code != identity.CodeUnknownJoinToken || time.Since(start) > 500*time.Millisecond {
				t.Fatalf("refusal %d after 25 admitted joins: %d %s in %s", i+1, got.status, got.body, time.Since(start))
			}
		}
	})
}

// postNoFatal is post for another goroutine: a failed request is an answer of status 0.
func postNoFatal(c *http.Client, env *authoritytest.Env, path string, body []byte) answer {
	resp, err := c.Post(env.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return answer{body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: data}
	_ = json.Unmarshal(data, &a.refusal)
	return a
}
