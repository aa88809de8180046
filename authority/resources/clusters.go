package resources

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// Kinds of the trusted-cluster resources (SPEC §8): a leaf authority
// trusts a root with a trusted_cluster; the root names the leaves that may
// attach their tunnel with a leaf_cluster.
const (
	KindTrustedCluster = "trusted_cluster"
	KindLeafCluster    = "leaf_cluster"
)

// TrustedClusterSpec is a leaf's trust in a root authority.
type TrustedClusterSpec struct {
	// Enabled: false keeps the resource but refuses every exchange at once.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Root is where the root authority's API is and the pin of its TLS CA.
	Root TrustedRoot `yaml:"root" json:"root"`
	// RoleMap turns the root roles on a root identity into leaf roles.
	RoleMap []RoleMapping `yaml:"role_map" json:"role_map"`
}

// TrustedRoot is the root authority as the leaf reaches it.
type TrustedRoot struct {
	URL   string `yaml:"url" json:"url"`
	CAPin string `yaml:"ca_pin" json:"ca_pin"`
	// ClusterName pins the root's cluster_name: the root at URL must
	// report it, and root identities naming it are this trust's alone. Two
	// trusted clusters may not pin the same name. Without it, the name the
	// root reports is used, and two roots reporting one name are refused
	// (root_name_collision) rather than one of them picked.
	ClusterName string `yaml:"cluster_name,omitempty" json:"cluster_name,omitempty"`
}

// RoleMapping maps root roles to leaf roles, as Teleport's role_map does:
// remote is a role name, a glob with *, or a regexp written ^...$; local
// entries may use $1, $2 ... of the regexp's captures.
type RoleMapping struct {
	Remote string   `yaml:"remote" json:"remote"`
	Local  []string `yaml:"local" json:"local"`
}

// LeafClusterSpec is a leaf a root lets attach its tunnel.
type LeafClusterSpec struct {
	// CAPin is the pin of the leaf's TLS CA, which signs the client
	// certificate the leaf's tunnel presents.
	CAPin string `yaml:"ca_pin" json:"ca_pin"`
}

type TrustedCluster struct {
	Metadata Metadata
	Spec     TrustedClusterSpec
	Source   Source
}

type LeafCluster struct {
	Metadata Metadata
	Spec     LeafClusterSpec
	Source   Source
}

// Document returns the trusted cluster as written.
func (t *TrustedCluster) Document() Document {
	spec := t.Spec
	if spec.RoleMap == nil {
		spec.RoleMap = []RoleMapping{}
	}
	return Document{Kind: KindTrustedCluster, Version: "v1", Metadata: t.Metadata, Spec: spec}
}

// Document returns the leaf cluster as written.
func (l *LeafCluster) Document() Document {
	return Document{Kind: KindLeafCluster, Version: "v1", Metadata: l.Metadata, Spec: l.Spec}
}

// pinPattern is the CA pin format of SPEC §3.
var pinPattern = lazyregexp.New(`^sha256:[0-9a-f]{64}$`)

// CheckCAPin checks a CA pin: sha256: and 64 lower-case hex digits.
func CheckCAPin(what, pin string) error {
	if !pinPattern.MatchString(pin) {
		return fmt.Errorf("%s %s is not sha256:<64 hex digits>; get it with mbot authority export --type ca-pin on that authority",
			what, identity.Quote(identity.Truncate(pin, 80)))
	}
	return nil
}

// maxRoleMap bounds a role map's entries and each entry's local roles.
const maxRoleMap = 64

func checkTrustedCluster(root *yaml.Node, spec *TrustedClusterSpec, fail nodeFail) error {
	u, err := url.Parse(spec.Root.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || len(spec.Root.URL) > 1024 {
		return fail(orSpec(root, "root"), "spec.root.url %s is not the https:// URL of the root authority (https://auth.acme.internal:8443)",
			identity.Quote(identity.Truncate(spec.Root.URL, 80)))
	}
	if err := CheckCAPin("spec.root.ca_pin", spec.Root.CAPin); err != nil {
		return fail(orSpec(root, "root"), "%v", err)
	}
	if n := spec.Root.ClusterName; n != "" {
		if err := identity.CheckName("spec.root.cluster_name", n); err != nil {
			return fail(orSpec(root, "root"), "%v (the root's cluster_name, as its authority.yaml says)", err)
		}
	}
	maps := Lookup(root, "spec", "role_map")
	if len(spec.RoleMap) == 0 {
		return fail(orSpec(root, "role_map"), "spec.role_map is required: map at least one root role to leaf roles, such as {remote: deploy, local: [leaf-deploy]}")
	}
	if len(spec.RoleMap) > maxRoleMap {
		return fail(maps, "spec.role_map has %d entries; at most %d", len(spec.RoleMap), maxRoleMap)
	}
	for i, m := range spec.RoleMap {
		at := item(maps, i)
		re, err := CompileRemoteRole(m.Remote)
		if err != nil {
			return fail(at, "spec.role_map[%d].remote: %v", i, err)
		}
		if len(m.Local) == 0 || len(m.Local) > maxRoleMap {
			return fail(at, "spec.role_map[%d].local: list 1 to %d leaf roles", i, maxRoleMap)
		}
		for _, l := range m.Local {
			if err := checkLocalRole(re, l); err != nil {
				return fail(at, "spec.role_map[%d].local: %v", i, err)
			}
		}
	}
	return nil
}

func checkLeafCluster(root *yaml.Node, spec *LeafClusterSpec, fail nodeFail) error {
	if err := CheckCAPin("spec.ca_pin", spec.CAPin); err != nil {
		return fail(orSpec(root, "ca_pin"), "%v (on the leaf)", err)
	}
	return nil
}

// CompileRemoteRole compiles a role_map remote: ^...$ is a regexp, any
// other value a glob whose * matches anything (a capture), anchored at
// both ends, so that a plain role name matches only itself.
func CompileRemoteRole(remote string) (*regexp.Regexp, error) {
	if remote == "" || len(remote) > 256 {
		return nil, fmt.Errorf("%s must be a role name, a glob such as ci-*, or a regexp such as ^ci-(.*)$", identity.Quote(identity.Truncate(remote, 80)))
	}
	expr := remote
	if !strings.HasPrefix(remote, "^") || !strings.HasSuffix(remote, "$") {
		parts := strings.Split(remote, "*")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		expr = "^" + strings.Join(parts, "(.*)") + "$"
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%s is not a regular expression: %s", identity.Quote(remote), identity.Quote(identity.Truncate(err.Error(), 120)))
	}
	return re, nil
}

// captureRef is a reference to a numbered capture in a local role.
var captureRef = lazyregexp.New(`\$\{?([0-9]+)\}?`)

// checkLocalRole checks a local role of a role_map entry: a role name, or
// a template of re's captures ($1, ${1}) that expands to one.
func checkLocalRole(re *regexp.Regexp, local string) error {
	if !strings.Contains(local, "$") {
		return identity.CheckName("role", local)
	}
	for _, m := range captureRef.FindAllStringSubmatch(local, -1) {
		if n, _ := strconv.Atoi(m[1]); n > re.NumSubexp() {
			return fmt.Errorf("%s names no capture of remote (it has %d); use $1 to $%d", identity.Quote(local), re.NumSubexp(), re.NumSubexp())
		}
	}
	// Expanding every capture to "x" must give a role name.
	subs := make([]int, 2*(re.NumSubexp()+1))
	src := strings.Repeat("x", re.NumSubexp()+1)
	for i := range re.NumSubexp() + 1 {
		subs[2*i], subs[2*i+1] = i, i+1
	}
	out := string(re.ExpandString(nil, local, src, subs))
	if out == "" || strings.Contains(out, "$") {
		return fmt.Errorf("%s names no capture of remote (it has %d); use $1 to $%d", identity.Quote(local), re.NumSubexp(), re.NumSubexp())
	}
	return identity.CheckName("role", out)
}
