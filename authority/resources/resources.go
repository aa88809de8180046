// Package resources defines the role, bot, join_token, database,
// kubernetes_cluster, trusted_cluster and leaf_cluster resources (SPEC §2, §7, §8)
// and reads them from YAML, refusing bad files with file, line and field.
package resources

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Kinds of resources.
const (
	KindRole      = "role"
	KindBot       = "bot"
	KindJoinToken = "join_token"
)

// Device Trust modes a role may ask for.
var deviceTrustModes = []string{"", "off", "optional", "required-for-humans", "required"}

// Metadata names a resource.
type Metadata struct {
	Name        string            `yaml:"name" json:"name"`
	Description string            `yaml:"description,omitempty" json:"description,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// Source says where a resource was defined, for error messages.
type Source struct {
	File string
	Line int
}

func (s Source) String() string {
	if s.File == "" {
		return fmt.Sprintf("line %d", s.Line)
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// RoleSpec grants SSH logins and what other outputs may hold, and bounds
// certificate lifetimes.
type RoleSpec struct {
	// Logins are SSH principals; "{{internal.<trait>}}" expands from the bot's traits.
	Logins            []string `yaml:"logins" json:"logins"`
	MaxTTL            Duration `yaml:"max_ttl,omitempty" json:"max_ttl,omitempty"`
	RequireSessionMFA bool     `yaml:"require_session_mfa,omitempty" json:"require_session_mfa,omitempty"`
	DeviceTrustMode   string   `yaml:"device_trust_mode,omitempty" json:"device_trust_mode,omitempty"`
	// SSH session permissions of the role's certificates, as Teleport's
	// role options; unset means the default (see policy.SSHExtensions).
	PermitPTY             *bool `yaml:"permit_pty,omitempty" json:"permit_pty,omitempty"`
	PermitPortForwarding  *bool `yaml:"permit_port_forwarding,omitempty" json:"permit_port_forwarding,omitempty"`
	PermitAgentForwarding *bool `yaml:"permit_agent_forwarding,omitempty" json:"permit_agent_forwarding,omitempty"`
	PermitX11Forwarding   *bool `yaml:"permit_x11_forwarding,omitempty" json:"permit_x11_forwarding,omitempty"`
	PermitUserRC          *bool `yaml:"permit_user_rc,omitempty" json:"permit_user_rc,omitempty"`

	// What the role grants to outputs other than identity (GrantFields).
	DBUsers          []string `yaml:"db_users,omitempty" json:"db_users,omitempty"`
	DBNames          []string `yaml:"db_names,omitempty" json:"db_names,omitempty"`
	KubernetesUsers  []string `yaml:"kubernetes_users,omitempty" json:"kubernetes_users,omitempty"`
	KubernetesGroups []string `yaml:"kubernetes_groups,omitempty" json:"kubernetes_groups,omitempty"`
	SPIFFEIDs        []string `yaml:"spiffe_ids,omitempty" json:"spiffe_ids,omitempty"`
	DNSSANs          []string `yaml:"dns_sans,omitempty" json:"dns_sans,omitempty"`
	JWTAudiences     []string `yaml:"jwt_audiences,omitempty" json:"jwt_audiences,omitempty"`
	HostNames        []string `yaml:"host_names,omitempty" json:"host_names,omitempty"`
	// DBServerNames are the DNS names (patterns) and IP addresses that
	// database_server outputs may certify a database server for.
	DBServerNames []string `yaml:"db_server_names,omitempty" json:"db_server_names,omitempty"`
}

// BotSpec is a machine identity: the roles it may use and its traits.
type BotSpec struct {
	Roles  []string            `yaml:"roles" json:"roles"`
	Traits map[string][]string `yaml:"traits,omitempty" json:"traits,omitempty"`
}

// JoinTokenSpec says which bot a proof joins as, by which method, and under
// which allow rules. The rules live in a section named after the method
// (github:, gitlab:, ...), which the method's verifier reads.
type JoinTokenSpec struct {
	Bot    string `yaml:"bot" json:"bot"`
	Method string `yaml:"method" json:"method"`
	// Sections holds every other key; only the one named Method may be present.
	Sections map[string]yaml.Node `yaml:",inline" json:"-"`
}

// Section returns the method's own section of the spec, or nil.
func (s *JoinTokenSpec) Section() *yaml.Node {
	if n, ok := s.Sections[s.Method]; ok {
		return &n
	}
	return nil
}

// Role, Bot and JoinToken are the three resource kinds.
type Role struct {
	Metadata Metadata
	Spec     RoleSpec
	Source   Source
}

type Bot struct {
	Metadata Metadata
	Spec     BotSpec
	Source   Source
}

type JoinToken struct {
	Metadata Metadata
	Spec     JoinTokenSpec
	Source   Source
}

// Resource is one parsed YAML document; exactly one of Role, Bot,
// JoinToken, Database, KubernetesCluster is set.
type Resource struct {
	Kind              string
	Role              *Role
	Bot               *Bot
	JoinToken         *JoinToken
	Database          *Database
	KubernetesCluster *KubernetesCluster
	TrustedCluster    *TrustedCluster
	LeafCluster       *LeafCluster
	// Body is the document as written, kept so that storage can round-trip it.
	Body []byte
}

// Name returns the resource's metadata name.
func (r *Resource) Name() string {
	switch {
	case r.Role != nil:
		return r.Role.Metadata.Name
	case r.Bot != nil:
		return r.Bot.Metadata.Name
	case r.JoinToken != nil:
		return r.JoinToken.Metadata.Name
	case r.Database != nil:
		return r.Database.Metadata.Name
	case r.KubernetesCluster != nil:
		return r.KubernetesCluster.Metadata.Name
	case r.TrustedCluster != nil:
		return r.TrustedCluster.Metadata.Name
	case r.LeafCluster != nil:
		return r.LeafCluster.Metadata.Name
	}
	return ""
}

// Source returns where the resource was defined.
func (r *Resource) Source() Source {
	switch {
	case r.Role != nil:
		return r.Role.Source
	case r.Bot != nil:
		return r.Bot.Source
	case r.JoinToken != nil:
		return r.JoinToken.Source
	case r.Database != nil:
		return r.Database.Source
	case r.KubernetesCluster != nil:
		return r.KubernetesCluster.Source
	case r.TrustedCluster != nil:
		return r.TrustedCluster.Source
	case r.LeafCluster != nil:
		return r.LeafCluster.Source
	}
	return Source{}
}

// Duration is a time.Duration written as "8h" or "90m" in YAML.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 30m or 8h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// envelope is the shape every document shares; Spec is decoded per kind.
type envelope[S any] struct {
	Kind     string   `yaml:"kind"`
	Version  string   `yaml:"version"`
	Metadata Metadata `yaml:"metadata"`
	Spec     S        `yaml:"spec"`
}

// Parse reads every YAML document of data. file names the source in errors.
func Parse(file string, data []byte) ([]Resource, error) {
	var (
		nodes []yaml.Node
		dec   = yaml.NewDecoder(strings.NewReader(string(data)))
	)
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, yamlError(file, err)
		}
		nodes = append(nodes, n)
	}
	// Second pass: decode each document into its kind's type with unknown
	// fields refused. yaml.v3 offers that check only on a Decoder, and a
	// Decoder over the whole stream keeps line numbers file-absolute.
	strict := yaml.NewDecoder(strings.NewReader(string(data)))
	strict.KnownFields(true)
	var out []Resource
	for i := range nodes {
		doc := &nodes[i]
		if isEmptyDocument(doc) {
			var skip any
			_ = strict.Decode(&skip)
			continue
		}
		if doc.Kind != yaml.DocumentNode || doc.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s:%d: a resource must be a mapping with kind, version, metadata and spec", file, doc.Line)
		}
		res, err := parseDocument(Source{File: file, Line: doc.Content[0].Line}, doc.Content[0], strict.Decode)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

func isEmptyDocument(doc *yaml.Node) bool {
	return len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null")
}

func parseDocument(src Source, root *yaml.Node, decode func(any) error) (Resource, error) {
	var fail nodeFail = func(n *yaml.Node, format string, args ...any) error {
		line := src.Line
		if n != nil {
			line = n.Line
		}
		return fmt.Errorf("%s:%d: %s", src.File, line, fmt.Sprintf(format, args...))
	}
	if err := checkKeys(root, fail); err != nil {
		return Resource{}, err
	}
	kindNode := Lookup(root, "kind")
	if kindNode == nil {
		return Resource{}, fail(root, "missing field kind (one of role, bot, join_token, database, kubernetes_cluster, trusted_cluster, leaf_cluster)")
	}
	writeNulls(root)
	body, err := yaml.Marshal(root)
	if err != nil {
		return Resource{}, fail(root, "%v", err)
	}
	res := Resource{Kind: kindNode.Value, Body: body}
	var meta Metadata
	switch kindNode.Value {
	case KindRole:
		var e envelope[RoleSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if !slices.Contains(deviceTrustModes, e.Spec.DeviceTrustMode) {
			return Resource{}, fail(Lookup(root, "spec", "device_trust_mode"),
				"spec.device_trust_mode %q is not one of off, optional, required-for-humans, required", e.Spec.DeviceTrustMode)
		}
		if time.Duration(e.Spec.MaxTTL) > 0 && time.Duration(e.Spec.MaxTTL) < time.Minute {
			return Resource{}, fail(Lookup(root, "spec", "max_ttl"), "spec.max_ttl must be at least 1m")
		}
		if err := checkRole(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		meta = e.Metadata
		res.Role = &Role{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	case KindBot:
		var e envelope[BotSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if len(e.Spec.Roles) == 0 {
			return Resource{}, fail(Lookup(root, "spec"), "spec.roles: a bot needs at least one role")
		}
		if err := checkBot(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		meta = e.Metadata
		res.Bot = &Bot{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	case KindJoinToken:
		var e envelope[JoinTokenSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if e.Spec.Bot == "" {
			return Resource{}, fail(Lookup(root, "spec"), "spec.bot is required: name the bot this join token joins as")
		}
		if e.Spec.Method == "" {
			return Resource{}, fail(Lookup(root, "spec"), "spec.method is required (github, gitlab, circleci, ...)")
		}
		if err := checkJoinToken(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		for _, key := range slices.Sorted(maps.Keys(e.Spec.Sections)) {
			if key != e.Spec.Method {
				return Resource{}, fail(Lookup(root, "spec", key),
					"spec.%s does not belong to a join token with method %q; rename it to spec.%s or change spec.method", fieldName(key), e.Spec.Method, e.Spec.Method)
			}
		}
		meta = e.Metadata
		res.JoinToken = &JoinToken{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	case KindDatabase:
		var e envelope[DatabaseSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if err := checkDatabase(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		meta = e.Metadata
		res.Database = &Database{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	case KindKubernetesCluster:
		var e envelope[KubernetesClusterSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if err := checkKubernetesCluster(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		meta = e.Metadata
		res.KubernetesCluster = &KubernetesCluster{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	case KindTrustedCluster:
		var e envelope[TrustedClusterSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if err := checkTrustedCluster(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		meta = e.Metadata
		res.TrustedCluster = &TrustedCluster{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	case KindLeafCluster:
		var e envelope[LeafClusterSpec]
		if err := decode(&e); err != nil {
			return Resource{}, yamlError(src.File, err)
		}
		if err := checkLeafCluster(root, &e.Spec, fail); err != nil {
			return Resource{}, err
		}
		meta = e.Metadata
		res.LeafCluster = &LeafCluster{Metadata: e.Metadata, Spec: e.Spec, Source: src}
	default:
		return Resource{}, fail(kindNode, "unknown kind %q (expected role, bot, join_token, database, kubernetes_cluster, trusted_cluster or leaf_cluster)", kindNode.Value)
	}
	if v := Lookup(root, "version"); v != nil && v.Value != "v1" {
		return Resource{}, fail(v, "version %q is not supported (expected v1)", v.Value)
	}
	if err := checkMetadata(root, meta, fail); err != nil {
		return Resource{}, err
	}
	return res, nil
}

// maxErrorLines bounds the errors reported for one document: a file full
// of mistakes (or an alias bomb) gives a readable message, not megabytes.
const maxErrorLines = 20

// yamlError turns yaml.v3's "line N: ..." messages into "file:N: ...".
// yaml.v3 prints unknown keys as written: control characters are escaped
// so that a key cannot forge a line of the message.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var lines []string
		for _, e := range te.Errors[:min(len(te.Errors), maxErrorLines)] {
			lines = append(lines, file+":"+escapeControls(unknownFieldMessage(strings.TrimPrefix(e, "line "))))
		}
		if more := len(te.Errors) - maxErrorLines; more > 0 {
			lines = append(lines, fmt.Sprintf("%s: and %d more errors", file, more))
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	if msg, ok := strings.CutPrefix(err.Error(), "line "); ok {
		return errors.New(file + ":" + escapeControls(msg))
	}
	return fmt.Errorf("%s: %s", file, escapeControls(err.Error()))
}

// escapeControls escapes control characters and invalid UTF-8 in s as Go does in a quoted string.
func escapeControls(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || unicode.IsControl(r) {
			q := strconv.QuoteToASCII(s[i : i+size])
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Lookup follows a path of mapping keys from n and returns the value node, or nil.
func Lookup(n *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
				break
			}
		}
		n = next
	}
	return n
}

func (d Duration) String() string { return time.Duration(d).String() }
