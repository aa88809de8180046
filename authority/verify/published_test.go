package verify_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"gopkg.in/yaml.v3"
)

// publishedExample is one file of testdata/claims/published: the claims of
// a token a platform published (its docs, or a verifier's fixtures taken
// from real tokens), kept as published, with comment lines:
//
//	// source: where the claims come from (a URL and what on that page)
//	// docs: the mbot page and join token whose rule the section follows
//	// section: a line of the join token's spec.<method> section
//	// aud: the authority's audience (its cluster name, or what the docs say)
//	// adjusted: what the test had to change in the published claims, and why
//	// refuse: <claim>: <JSON value> -- a change the documented rule must refuse
type publishedExample struct {
	file, method, source, docs, section, aud string
	adjusted                                 []string
	refuse                                   []claimChange
	claims                                   map[string]any
}

// claimChange sets a claim to a value. The claim is a path into the
// token's JSON, its keys joined by dots; as claim names have dots of their
// own (oidc.circleci.com/project-id, kubernetes.io), the longest key that
// exists is taken at each step.
type claimChange struct {
	claim string
	value any
}

func (c claimChange) String() string {
	v, _ := json.Marshal(c.value)
	return c.claim + "=" + string(v)
}

func (c claimChange) apply(t *testing.T, claims map[string]any) {
	t.Helper()
	m, rest := claims, c.claim
	for {
		key := rest
		for {
			if _, ok := m[key]; ok {
				break
			}
			i := strings.LastIndex(key, ".")
			if i < 0 {
				key = rest // a new claim
				break
			}
			key = key[:i]
		}
		if key == rest {
			m[key] = c.value
			return
		}
		next, ok := m[key].(map[string]any)
		if !ok {
			t.Fatalf("refuse %s: %s is not an object", c, key)
		}
		m, rest = next, rest[len(key)+1:]
	}
}

// publishedDir is testdata/claims/published.
var publishedDir = filepath.Join("..", "..", "testdata", "claims", "published")

func readPublishedExamples(t *testing.T) []publishedExample {
	t.Helper()
	entries, err := os.ReadDir(publishedDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []publishedExample
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(publishedDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ex := publishedExample{file: e.Name(), method: strings.SplitN(strings.TrimSuffix(e.Name(), ".json"), "-", 2)[0]}
		var body, section []string
		for _, line := range strings.Split(string(data), "\n") {
			rest, ok := strings.CutPrefix(line, "//")
			if !ok {
				body = append(body, line)
				continue
			}
			key, value, _ := strings.Cut(strings.TrimPrefix(rest, " "), ":")
			value = strings.TrimPrefix(value, " ")
			switch key {
			case "source":
				ex.source = value
			case "docs":
				ex.docs = value
			case "section":
				section = append(section, value)
			case "aud":
				ex.aud = value
			case "adjusted":
				ex.adjusted = append(ex.adjusted, value)
			case "refuse":
				claim, raw, _ := strings.Cut(value, ": ")
				var v any
				if err := json.Unmarshal([]byte(raw), &v); err != nil {
					t.Fatalf("%s: refuse %q: the value is not JSON: %v", e.Name(), value, err)
				}
				ex.refuse = append(ex.refuse, claimChange{claim: claim, value: v})
			default:
				t.Fatalf("%s: unknown comment %q (want source:, docs:, section:, aud:, adjusted: or refuse:)", e.Name(), line)
			}
		}
		ex.section = strings.Join(section, "\n") + "\n"
		dec := json.NewDecoder(strings.NewReader(strings.Join(body, "\n")))
		dec.UseNumber()
		if err := dec.Decode(&ex.claims); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		if ex.source == "" || ex.docs == "" || len(section) == 0 || ex.aud == "" || len(ex.refuse) == 0 {
			t.Fatalf("%s: needs // source:, // docs:, // section:, // aud: and at least one // refuse: line", e.Name())
		}
		out = append(out, ex)
	}
	return out
}

// TestPublishedExamples signs each platform's published example token with
// a test key, serves its issuer's discovery document and keys under the
// published issuer's own host name (TLS over loopback, a test CA), and feeds
// it through its method's verifier compiled from the join token section mbot's
// docs tell a user to write, with the authority's clock at the token's iat:
// the token must be admitted and its rule must match. Each // refuse: change
// of a claim must then be refused.
func TestPublishedExamples(t *testing.T) {
	examples := readPublishedExamples(t)
	methods := map[string]bool{}
	for _, ex := range examples {
		methods[ex.method] = true
	}
	// Every OIDC-based method has a published example; the others are
	// covered (or said not to apply) in testdata/claims/published/README.md.
	for _, m := range []string{"github", "gitlab", "circleci", "bitbucket", "buildkite", "azure_devops", "forgejo",
		"jenkins", "spacelift", "terraform_cloud", "env0", "semaphore", "codefresh", "kubernetes", "oidc", "gcp"} {
		if !methods[m] {
			t.Errorf("no published example for method %s in %s", m, publishedDir)
		}
	}
	var issuers []string
	for _, ex := range examples {
		if s, ok := ex.claims["iss"].(string); ok {
			issuers = append(issuers, s)
		}
	}
	iss := startAnyHostIssuer(t, issuers)
	for _, ex := range examples {
		t.Run(ex.file, func(t *testing.T) {
			if _, ok := verify.Methods[ex.method]; !ok {
				t.Fatalf("%s names method %q, which is not one of %v", ex.file, ex.method, verify.MethodNames())
			}
			checkDocumentedShape(t, ex)
			claims := maps.Clone(ex.claims)
			issued := fillLifetime(t, ex, claims)
			env := newEnv(iss.client)
			env.Audience = ex.aud
			env.Now = func() time.Time { return issued.Add(time.Second) }
			// A join token that pins keys (static_jwks) pins the test's.
			section := strings.ReplaceAll(ex.section, "{{test-jwks}}", iss.key.JWKS())
			v := mustCompile(t, ex.method, section, env)
			if err := admitted(t.Context(), v, iss.sign(t, claims)); err != nil {
				t.Fatalf("the published example (%s) was refused with the rule of %s:\n%s\n%v", ex.source, ex.docs, ex.section, err)
			}
			for _, change := range ex.refuse {
				changed := deepClone(t, claims)
				change.apply(t, changed)
				if err := admitted(t.Context(), v, iss.sign(t, changed)); err == nil {
					t.Errorf("with %s the example is still admitted by the rule of %s:\n%s", change, ex.docs, ex.section)
				}
			}
		})
	}
}

// admitted verifies proof and matches the join token's rules, as the
// authority does.
func admitted(ctx context.Context, v verify.Verifier, proof string) error {
	adm, err := v.Verify(ctx, proof)
	if err != nil {
		return err
	}
	if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
		return fmt.Errorf("no rule matches: %s", why)
	}
	return nil
}

// fillLifetime keeps a published token's iat, nbf and exp (the authority's
// clock is set to iat); a fixture whose source shows none gets them around
// the test clock, and an aud where the source shows none: each such fixture
// must say so in an // adjusted: line. It returns the time of issue.
func fillLifetime(t *testing.T, ex publishedExample, claims map[string]any) time.Time {
	t.Helper()
	var filled []string
	if _, ok := claims["aud"]; !ok {
		claims["aud"] = ex.aud
		filled = append(filled, "aud")
	}
	issued := now
	if n, ok := claims["iat"].(json.Number); ok {
		sec, err := n.Int64()
		if err != nil {
			t.Fatalf("iat %v: %v", n, err)
		}
		issued = time.Unix(sec, 0)
	} else {
		claims["iat"] = now.Unix()
		filled = append(filled, "iat")
	}
	if exp, ok := claims["exp"].(json.Number); !ok || exp.String() == "0" {
		claims["exp"] = issued.Add(5 * time.Minute).Unix()
		filled = append(filled, "exp")
	}
	if len(filled) > 0 && len(ex.adjusted) == 0 {
		t.Fatalf("%s: the test fills %v, which the source does not show; say so in an // adjusted: line", ex.file, filled)
	}
	return issued
}

func deepClone(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDocumentedShape checks that the fixture's section is the one the docs
// page shows for the join token it names: the same section keys, and each
// allow rule naming the fields of one of the page's rules. The values are the
// published token's, so they differ from the page's examples.
func checkDocumentedShape(t *testing.T, ex publishedExample) {
	t.Helper()
	page, name, ok := strings.Cut(ex.docs, " ")
	if !ok {
		t.Fatalf("// docs: %q: want <page> <join token name>", ex.docs)
	}
	data, err := os.ReadFile(filepath.Join("..", "..", page))
	if err != nil {
		t.Fatalf("// docs: %v", err)
	}
	var documented *yaml.Node
	for _, node := range yamlDocuments(string(data)) {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Method string               `yaml:"method"`
				Other  map[string]yaml.Node `yaml:",inline"`
			} `yaml:"spec"`
		}
		if node.Decode(&doc) != nil || doc.Kind != "join_token" || doc.Metadata.Name != name {
			continue
		}
		if doc.Spec.Method != ex.method {
			t.Fatalf("%s: join token %s has method %s, not %s", page, name, doc.Spec.Method, ex.method)
		}
		n := doc.Spec.Other[ex.method]
		documented = &n
	}
	if documented == nil {
		t.Fatalf("%s shows no join token %q (the // docs: line)", page, name)
	}
	var fixture yaml.Node
	if err := yaml.Unmarshal([]byte(ex.section), &fixture); err != nil {
		t.Fatalf("// section: %v", err)
	}
	want, wantRules := sectionShape(documented)
	got, gotRules := sectionShape(fixture.Content[0])
	if !slices.Equal(got, want) {
		t.Errorf("the section's keys are %v, but %s's join token %s has %v", got, page, name, want)
	}
	// A rule may leave out fields of the page's rule that the published
	// token does not carry (a manual trigger has no branch).
	for i, r := range gotRules {
		if !slices.ContainsFunc(wantRules, func(w []string) bool { return isSubset(r, w) }) {
			t.Errorf("allow[%d] names %v; %s's join token %s has rules of %v", i, r, page, name, wantRules)
		}
	}
}

func isSubset(small, big []string) bool {
	for _, s := range small {
		if !slices.Contains(big, s) {
			return false
		}
	}
	return len(small) > 0
}

// sectionShape is a section's keys and each allow rule's field names, sorted.
func sectionShape(n *yaml.Node) (keys []string, rules [][]string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		keys = append(keys, n.Content[i].Value)
		if n.Content[i].Value != "allow" {
			continue
		}
		for _, rule := range n.Content[i+1].Content {
			var fields []string
			for j := 0; j < len(rule.Content); j += 2 {
				fields = append(fields, rule.Content[j].Value)
			}
			slices.Sort(fields)
			rules = append(rules, fields)
		}
	}
	slices.Sort(keys)
	return keys, rules
}

var yamlFence = regexp.MustCompile("(?ms)^```ya?ml\n(.*?)^```")

// yamlDocuments are the YAML documents of a page's yaml blocks.
func yamlDocuments(markdown string) []*yaml.Node {
	var out []*yaml.Node
	for _, m := range yamlFence.FindAllStringSubmatch(markdown, -1) {
		dec := yaml.NewDecoder(strings.NewReader(m[1]))
		for {
			var n yaml.Node
			if dec.Decode(&n) != nil {
				break
			}
			out = append(out, &n)
		}
	}
	return out
}

// anyHostIssuer is an OIDC issuer for any https host name: its client dials
// the loopback server whatever the host, and the server presents a
// certificate for the name asked (from a CA only the client trusts), and
// serves a discovery document naming the issuer it was asked for (one of
// issuers where that differs only by a trailing slash).
type anyHostIssuer struct {
	client *http.Client
	key    *testIssuer
}

func startAnyHostIssuer(t *testing.T, issuers []string) *anyHostIssuer {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "published examples test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	var mu sync.Mutex
	certs := map[string]*tls.Certificate{}
	signing := &testIssuer{alg: jose.RS256, key: testKey(t, jose.RS256, "issuer"), kid: "published-2026"}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if prefix, ok := strings.CutSuffix(r.URL.Path, "/.well-known/openid-configuration"); ok {
			// An issuer whose name ends in a slash (Auth0's, env0's) has its
			// document at the same place as the one without.
			issuer := "https://" + r.Host + prefix
			if slices.Contains(issuers, issuer+"/") {
				issuer += "/"
			}
			_ = json.NewEncoder(w).Encode(map[string]any{
				"issuer":   issuer,
				"jwks_uri": "https://" + r.Host + "/published-examples/jwks",
			})
			return
		}
		if r.URL.Path == "/published-examples/jwks" {
			_, _ = w.Write([]byte(signing.JWKS()))
			return
		}
		http.NotFound(w, r)
	}))
	srv.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := certs[hello.ServerName]; ok {
			return c, nil
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(len(certs) + 2)), Subject: pkix.Name{CommonName: hello.ServerName},
			DNSNames: []string{hello.ServerName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return nil, err
		}
		c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		certs[hello.ServerName] = c
		return c, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	addr := srv.Listener.Addr().String()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	return &anyHostIssuer{client: client, key: signing}
}

func (i *anyHostIssuer) sign(t *testing.T, claims map[string]any) string {
	return i.key.Sign(t, claims)
}

// TestPublishedSTSResponses feeds the GetCallerIdentity responses of AWS's
// API reference (testdata/claims/published/iam-*.xml, verbatim: with its
// namespace and ResponseMetadata) through the iam verifier, from a loopback
// STS, with the rule docs/platforms/aws.md shows (aws_account and an
// assumed role's aws_arn, here the example's role): the assumed role's is
// admitted, the IAM user's refused, and admitted by a rule naming the user.
// (The signature of the request is checked by simci's STS stand-in in
// aws_test.go; here STS's answer is the published one.)
func TestPublishedSTSResponses(t *testing.T) {
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(publishedDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("<!-- source: ")) {
			t.Fatalf("%s names no source", name)
		}
		return data
	}
	const roleRule = "  - aws_account: \"123456789012\"\n    aws_arn: \"arn:aws:sts::123456789012:assumed-role/my-role-name/*\"\n"
	const userRule = "  - aws_arn: \"arn:aws:iam::123456789012:user/Alice\"\n"
	for _, tc := range []struct {
		file, rule string
		admit      bool
		want       policy.Claims
	}{
		{"iam-assumed-role.xml", roleRule, true, policy.Claims{"aws_account": {"123456789012"},
			"aws_arn": {"arn:aws:sts::123456789012:assumed-role/my-role-name/my-role-session-name"}}},
		{"iam-user.xml", roleRule, false, nil},
		{"iam-user.xml", userRule, true, policy.Claims{"aws_account": {"123456789012"}, "aws_arn": {"arn:aws:iam::123456789012:user/Alice"}}},
	} {
		name := "role rule"
		if tc.rule == userRule {
			name = "user rule"
		}
		t.Run(tc.file+"/"+name, func(t *testing.T) {
			body := read(tc.file)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/xml")
				_, _ = w.Write(body)
			}))
			t.Cleanup(srv.Close)
			v := mustCompile(t, "iam", iamSection(srv.URL, tc.rule), awsEnv())
			adm, err := v.Verify(t.Context(), awsProof{url: srv.URL + "/"}.sign(t))
			if err != nil {
				t.Fatalf("AWS's published response was refused: %v", err)
			}
			for k, want := range tc.want {
				if got := adm.Claims[k]; !slices.Equal(got, want) {
					t.Errorf("claim %s = %v, want %v", k, got, want)
				}
			}
			ok, why := policy.MatchRules(v.Rules(), adm.Claims)
			if ok != tc.admit {
				t.Errorf("rule\n%smatches: %v (%s), want %v", tc.rule, ok, why, tc.admit)
			}
		})
	}
}
