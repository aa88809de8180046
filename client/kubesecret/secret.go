package kubesecret

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Secret types mbot writes.
const (
	TypeOpaque = "Opaque"
	TypeTLS    = "kubernetes.io/tls"
)

// ManagedByLabel marks a Secret mbot wrote: mbot replaces only a Secret
// that carries it or holds no data yet, so that a mistyped name never
// overwrites someone else's Secret.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "mbot"
)

// conflictRetries is how often a write is tried again when the Secret
// changed between reading and writing it (409 Conflict).
const conflictRetries = 5

// Ref names one Secret and the labels mbot puts on it.
type Ref struct {
	Namespace, Name string
	Labels          map[string]string
	// Role names the Role that should grant access, for messages.
	Role string
}

func (r Ref) String() string { return "Secret " + r.Namespace + "/" + r.Name }

// secret is the part of a core/v1 Secret mbot reads and writes; metadata
// it does not know (annotations, owner references) is kept as it was.
type secret struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   map[string]any    `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
	Immutable  *bool             `json:"immutable,omitempty"`
}

// Client writes Secrets through one API server.
type Client struct {
	cfg  *Config
	http *http.Client
	// BeforeWrite, set by tests, runs between reading the Secret and
	// writing it, where another writer may change it.
	BeforeWrite func()
}

// New makes a client for cfg.
func New(cfg *Config) *Client { return &Client{cfg: cfg, http: cfg.httpClient()} }

// Config is the client's configuration.
func (c *Client) Config() *Config { return c.cfg }

// CloseIdleConnections closes the client's idle connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// PermissionError is a request the API server forbade: the verb on the
// Secret, and the Role that should grant it.
type PermissionError struct {
	Verb   string
	Ref    Ref
	As     string // the user the API server saw, when known
	Reason string
}

func (e *PermissionError) Error() string {
	who := e.As
	if who == "" {
		who = "mbot's user"
	}
	role := e.Ref.Role
	if role == "" {
		role = "the Role bound to it"
	}
	fix := fmt.Sprintf(`add verb %q on secrets with resourceNames: [%q] to %s in namespace %s`, e.Verb, e.Ref.Name, role, e.Ref.Namespace)
	if e.Verb == "create" {
		// The name of an object to create is not known to the authorizer.
		fix = fmt.Sprintf(`create the Secret once (kubectl create secret generic %s --namespace %s), as the mbot-agent chart does, `+
			`or add verb "create" on secrets to %s (Kubernetes RBAC cannot limit create to resourceNames, so that allows creating any Secret in %s)`,
			e.Ref.Name, e.Ref.Namespace, role, e.Ref.Namespace)
	}
	msg := fmt.Sprintf("%s: %s may not %s it; %s", e.Ref, who, e.Verb, fix)
	if e.Reason != "" {
		msg += " (the API server said: " + e.Reason + ")"
	}
	return msg
}

// apiError is an API server's answer other than success: its status and
// the message of its Status object.
type apiError struct {
	code    int
	reason  string
	message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.code, e.reason, e.message)
}

func statusIs(err error, code int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == code
}

// do sends one request and decodes the answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.cfg.Server+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := c.cfg.bearer()
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reaching the Kubernetes API server %s (from %s): %w", c.cfg.Server, c.cfg.Source, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var st struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &st)
		if st.Message == "" {
			st.Message = strings.TrimSpace(string(data))
			if len(st.Message) > 200 {
				st.Message = st.Message[:200]
			}
		}
		return &apiError{code: resp.StatusCode, reason: st.Reason, message: st.Message}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func secretPath(r Ref) string {
	return "/api/v1/namespaces/" + url.PathEscape(r.Namespace) + "/secrets/" + url.PathEscape(r.Name)
}

func (c *Client) get(ctx context.Context, r Ref) (*secret, error) {
	var s secret
	if err := c.do(ctx, http.MethodGet, secretPath(r), nil, &s); err != nil {
		return nil, c.explain(ctx, err, "get", r)
	}
	return &s, nil
}

// explain turns a 403 into a PermissionError naming the verb, a 401 into
// a message about the credentials, and wraps the rest with the Secret.
func (c *Client) explain(ctx context.Context, err error, verb string, r Ref) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		return fmt.Errorf("%s: %w", r, err)
	}
	switch ae.code {
	case http.StatusForbidden:
		return &PermissionError{Verb: verb, Ref: r, As: c.whoami(ctx), Reason: ae.message}
	case http.StatusUnauthorized:
		return fmt.Errorf("%s: the API server %s did not accept the credentials of %s (%s); check the service account token or the kubeconfig", r, c.cfg.Server, c.cfg.Source, ae.message)
	}
	return fmt.Errorf("%s: %s %s: %w", r, verb, r.Name, err)
}

// whoami is the user the API server sees (a SelfSubjectReview), or "".
func (c *Client) whoami(ctx context.Context) string {
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	in := map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
	if c.do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews", in, &review) != nil {
		return ""
	}
	return review.Status.UserInfo.Username
}

// allowed asks the API server whether mbot's user may verb the Secret (a
// SelfSubjectAccessReview, which every authenticated user may create).
// When the review cannot be made, it answers true: the write itself is
// then refused with the same message.
func (c *Client) allowed(ctx context.Context, verb string, r Ref) bool {
	attrs := map[string]any{"namespace": r.Namespace, "verb": verb, "resource": "secrets"}
	if verb != "create" {
		attrs["name"] = r.Name
	}
	in := map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
		"spec": map[string]any{"resourceAttributes": attrs}}
	var review struct {
		Status struct {
			Allowed bool `json:"allowed"`
		} `json:"status"`
	}
	if err := c.do(ctx, http.MethodPost, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", in, &review); err != nil {
		return true
	}
	return review.Status.Allowed
}

// Check says, without changing anything, whether the Secret can be
// written: mbot's user may get it and update it (or create it, when it
// does not exist), and it is one mbot may replace. Callers run it before
// a join, so that a Secret mbot cannot write costs no proof.
func (c *Client) Check(ctx context.Context, r Ref, typ string) error {
	s, err := c.get(ctx, r)
	switch {
	case isNotFound(err):
		if !c.allowed(ctx, "create", r) {
			return &PermissionError{Verb: "create", Ref: r, As: c.whoami(ctx)}
		}
		return nil
	case err != nil:
		return err
	}
	if err := replaceable(s, r, typ); err != nil {
		return err
	}
	if !c.allowed(ctx, "update", r) {
		return &PermissionError{Verb: "update", Ref: r, As: c.whoami(ctx)}
	}
	return nil
}

func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == http.StatusNotFound
}

// replaceable refuses a Secret that mbot did not write and that holds
// data, one that is immutable, and one whose type cannot hold typ's keys
// (typ "": any type).
func replaceable(s *secret, r Ref, typ string) error {
	labels, _ := s.Metadata["labels"].(map[string]any)
	if len(s.Data) > 0 && labels[ManagedByLabel] != ManagedByValue {
		return fmt.Errorf("%s exists, holds keys %s and is not labelled %s=%s, so mbot did not write it; choose another name, or delete it (kubectl delete secret %s --namespace %s)",
			r, strings.Join(slices.Sorted(maps.Keys(s.Data)), ", "), ManagedByLabel, ManagedByValue, r.Name, r.Namespace)
	}
	if s.Immutable != nil && *s.Immutable {
		return fmt.Errorf("%s is immutable, so mbot cannot renew it; delete it (kubectl delete secret %s --namespace %s) and let mbot create it", r, r.Name, r.Namespace)
	}
	if typ != "" && s.Type != "" && s.Type != TypeOpaque && s.Type != typ {
		return fmt.Errorf("%s is of type %s, but this output is written as type %s (a Secret's type cannot change); delete it (kubectl delete secret %s --namespace %s) and let mbot create it",
			r, s.Type, typ, r.Name, r.Namespace)
	}
	return nil
}

// Result says how a Write went.
type Result struct {
	Created         bool
	Conflicts       int    // writes refused because the Secret had changed, then retried
	ResourceVersion string // of the Secret written
}

// Write replaces the Secret's data with data in one request: an update
// with the resourceVersion it read (so that a concurrent change makes the
// API server refuse it, and Write reads and tries again), or a create when
// it does not exist. Labels mbot sets are added, other metadata is kept.
// typ is the type of a new Secret; an existing Opaque Secret stays Opaque,
// since a Secret's type cannot change. On error the Secret is as it was.
func (c *Client) Write(ctx context.Context, r Ref, typ string, data map[string][]byte) (Result, error) {
	var res Result
	for attempt := 0; ; attempt++ {
		cur, err := c.get(ctx, r)
		notFound := isNotFound(err)
		if err != nil && !notFound {
			return res, err
		}
		if cur != nil {
			if err := replaceable(cur, r, typ); err != nil {
				return res, err
			}
		}
		if c.BeforeWrite != nil {
			c.BeforeWrite()
		}
		var out secret
		verb := "update"
		if notFound {
			verb = "create"
			s := secret{APIVersion: "v1", Kind: "Secret", Type: typ, Data: data,
				Metadata: map[string]any{"name": r.Name, "namespace": r.Namespace, "labels": labelsWith(nil, r.Labels)}}
			err = c.do(ctx, http.MethodPost, "/api/v1/namespaces/"+url.PathEscape(r.Namespace)+"/secrets", s, &out)
			res.Created = err == nil
		} else {
			// metadata.resourceVersion, read above, makes the update conditional.
			// Omitted managedFields are kept as they are.
			delete(cur.Metadata, "managedFields")
			labels, _ := cur.Metadata["labels"].(map[string]any)
			cur.Metadata["labels"] = labelsWith(labels, r.Labels)
			cur.Data = data
			if cur.Type == "" {
				cur.Type = typ
			}
			err = c.do(ctx, http.MethodPut, secretPath(r), cur, &out)
		}
		if statusIs(err, http.StatusConflict) && attempt < conflictRetries {
			// Changed since it was read (update), or created meanwhile (create).
			res.Conflicts++
			continue
		}
		if err != nil {
			return res, c.explain(ctx, err, verb, r)
		}
		res.ResourceVersion, _ = out.Metadata["resourceVersion"].(string)
		return res, nil
	}
}

// labelsWith is have with want and the managed-by label set.
func labelsWith(have map[string]any, want map[string]string) map[string]any {
	out := map[string]any{}
	maps.Copy(out, have)
	for k, v := range want {
		out[k] = v
	}
	out[ManagedByLabel] = ManagedByValue
	return out
}

// Read returns the Secret's data, or nil and no error when it does not exist.
func (c *Client) Read(ctx context.Context, r Ref) (map[string][]byte, error) {
	s, err := c.get(ctx, r)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.Data, nil
}
