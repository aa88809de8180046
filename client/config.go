package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
	"github.com/mbot-dev/mbot/internal/suggest"
	"github.com/mbot-dev/mbot/joiners"
	"gopkg.in/yaml.v3"
)

// OutputTypeIdentity is the identity directory of SPEC §4 (SSH and TLS
// keys and certificates, known_hosts, ssh_config, identity.json).
const OutputTypeIdentity = "identity"

// Config is mbot.yaml: how to join and which outputs one join writes.
// Flags and MBOT_* variables override its values.
//
//	authority: https://auth.acme.internal:8443
//	ca_pin: sha256:...
//	token: github-deploy
//	ttl: 1h
//	outputs:
//	  - type: identity
//	    destination: ./mbot-deploy
//	    roles: [deploy]
//	  - type: database
//	    destination: ./db
//	    database: prod-pg
//	    username: ci_migrate
//	  - type: kubernetes
//	    destination: ./kube
//	    kubernetes_cluster: prod
//	  - type: ssh_host
//	    destination: /etc/ssh/mbot
//	    host_names: [web1.ci.acme.internal]
type Config struct {
	Authority  string   `yaml:"authority"`
	CAPin      string   `yaml:"ca_pin"`
	Token      string   `yaml:"token"`
	JoinMethod string   `yaml:"join_method"`
	TTL        Duration `yaml:"ttl"`
	Outputs    []Output `yaml:"outputs"`
	// RenewalInterval is how often mbot start renews; mbot issue ignores it.
	RenewalInterval RenewalInterval `yaml:"renewal_interval"`
	// KeypairPath is the runner's private key of a bound_keypair join.
	KeypairPath string `yaml:"keypair_path"`
	// LeafClusters are leaf clusters reached directly rather than through
	// the root's relay (SPEC §8).
	LeafClusters []LeafCluster `yaml:"leaf_clusters"`
}

// Output is one output of a join: its own fresh keys, roles and destination.
type Output struct {
	// Type is what is written (SPEC §7): identity (the default), database,
	// kubernetes, application, workload-identity-jwt, ssh_host.
	Type string `yaml:"type"`
	// Destination is the directory the output is written to (a relative
	// path is relative to the working directory, like --out), or a
	// Kubernetes Secret (destination.go).
	Destination Destination `yaml:"destination"`
	// Roles is the subset of the bot's roles this output carries; empty means all.
	Roles []string `yaml:"roles"`
	// Name names the output in identity.json, the audit log and GitHub step
	// outputs; default the destination's base name.
	Name string `yaml:"name"`
	// Cluster names the leaf cluster whose certificates the output holds,
	// exchanged for the root identity (SPEC §8); empty: the root's.
	Cluster string `yaml:"cluster"`
	// Authority is the leaf's URL, to exchange there directly rather than
	// through the root's relay; its ca_pin comes from leaf_clusters.
	Authority string `yaml:"authority"`
	// Owner is USER[:GROUP] to give the destination directory and its files
	// to, for a server that reads them as its own user (owner: postgres);
	// mbot must run as root.
	Owner string `yaml:"owner"`
	// Reload is the command mbot start runs after each successful write of
	// the output (reload.go), such as [systemctl, reload, postgresql].
	Reload ReloadCommand `yaml:"reload"`
	// ReloadTimeout bounds Reload (default DefaultReloadTimeout); the
	// command is killed when it passes.
	ReloadTimeout ReloadTimeout `yaml:"reload_timeout"`

	// The fields of each output type, one struct per type (output_<type>.go).
	DatabaseOutput       `yaml:",inline"`
	KubernetesOutput     `yaml:",inline"`
	SSHHostOutput        `yaml:",inline"`
	ApplicationOutput    `yaml:",inline"`
	JWTOutput            `yaml:",inline"`
	DatabaseServerOutput `yaml:",inline"`

	// owner is Owner looked up on this host; nil for none.
	owner *identity.Owner
}

// Duration is a time.Duration written as "1h" or "90m".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v <= 0 {
		return fmt.Errorf("line %d: ttl: %q is not a positive duration such as 30m or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads mbot.yaml, refusing unknown fields and bad values with
// the file, line and field.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading --config (MBOT_CONFIG): %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig reads mbot.yaml from data; path names it in errors.
func ParseConfig(path string, data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s is empty; it needs at least outputs:", path)
		}
		var doc yaml.Node
		_ = yaml.Unmarshal(data, &doc) // where the error points, when it parses
		var root *yaml.Node
		if len(doc.Content) > 0 {
			root = doc.Content[0]
		}
		return nil, configYAMLError(path, root, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, configYAMLError(path, nil, err)
	}
	if err := cfg.checkAndSetDefaults(path, doc.Content[0]); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// notInName matches what an output name derived from a destination drops.
var notInName = lazyregexp.New(`[^a-z0-9_.-]+`)

func (c *Config) checkAndSetDefaults(path string, root *yaml.Node) error {
	fail := func(at []string, format string, args ...any) error {
		line := root.Line
		for i := len(at); i > 0; i-- { // the deepest node of at that exists
			if n := lookup(root, at[:i]...); n != nil {
				line = n.Line
				break
			}
		}
		field := at[0]
		for _, seg := range at[1:] {
			if _, err := strconv.Atoi(seg); err == nil {
				field += "[" + seg + "]"
			} else {
				field += "." + seg
			}
		}
		return fmt.Errorf("%s:%d: %s: %s", path, line, field, fmt.Sprintf(format, args...))
	}
	if c.JoinMethod != "" && c.JoinMethod != "auto" {
		if _, err := joiners.ByMethod(c.JoinMethod); err != nil {
			return fail([]string{"join_method"}, "%v", err)
		}
	}
	for i, lc := range c.LeafClusters {
		at := func(field string) []string { return []string{"leaf_clusters", strconv.Itoa(i), field} }
		if err := identity.CheckName("leaf cluster name", lc.Name); err != nil {
			return fail(at("name"), "%v", err)
		}
		if lc.URL != "" {
			if _, err := parseAuthorityURL(lc.URL); err != nil {
				return fail(at("url"), "%v", err)
			}
		}
		if lc.CAPin != "" {
			if _, err := parsePin(lc.CAPin); err != nil {
				return fail(at("ca_pin"), "%v", err)
			}
		}
		if slices.IndexFunc(c.LeafClusters[:i], func(o LeafCluster) bool { return o.Name == lc.Name }) >= 0 {
			return fail(at("name"), "leaf cluster %s is listed twice", lc.Name)
		}
	}
	if len(c.Outputs) == 0 {
		return fail([]string{"outputs"}, "is required: list at least one output, such as {type: identity, destination: ./mbot}")
	}
	canon := canonicalDirs{}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		at := func(field string) []string { return []string{"outputs", strconv.Itoa(i), field} }
		named := o.Name != ""
		if err := o.CheckAndSetDefaults(); err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				return fail(at(fe.field), "%s", fe.msg)
			}
			return fail(at("type"), "%v", err)
		}
		for j := range i {
			if err := canon.distinct(c.Outputs[j].Destination, o.Destination, fmt.Sprintf("outputs[%d]", j)); err != nil {
				return fail(at("destination"), "%v", err)
			}
		}
		taken := func(name string) int {
			return slices.IndexFunc(c.Outputs[:i], func(p Output) bool { return p.Name == name })
		}
		if j := taken(o.Name); j >= 0 {
			if named {
				return fail(at("name"), "output name %q is already used by outputs[%d]; give each output its own name", o.Name, j)
			}
			// A name derived from the destination (./a/mbot, ./b/mbot) gets a number.
			base := o.Name
			for n := 2; taken(o.Name) >= 0; n++ {
				o.Name = fmt.Sprintf("%s-%d", base, n)
			}
		}
	}
	return nil
}

// fieldError is a bad value of one field of an output.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// CheckAndSetDefaults checks one output and fills in its type and name.
func (o *Output) CheckAndSetDefaults() error {
	if o.Type == "" {
		o.Type = OutputTypeIdentity
	}
	kind, ok := outputKinds[o.Type]
	if !ok {
		return badField("type", "%s is not an output type; use one of %s", identity.Quote(o.Type), strings.Join(outputTypeNames(), ", "))
	}
	own := kind.setFields(o) // a field two types share (spiffe_id) is the output's own
	for _, typ := range outputTypeNames() {
		if other := outputKinds[typ]; typ != o.Type {
			for _, f := range other.setFields(o) {
				if !slices.Contains(own, f) {
					return badField(f, "belongs to outputs of type %s, not %s; set type: %s or remove it", typ, o.Type, typ)
				}
			}
		}
	}
	if err := kind.checkAndSetDefaults(o); err != nil {
		return err
	}
	switch {
	case o.Destination.Secret != nil:
		if err := o.Destination.Secret.checkAndSetDefaults(); err != nil {
			return err
		}
	case o.Destination.Dir == "":
		return badField("destination", "is required: the directory this output is written to, or a Secret ({type: kubernetes_secret, name: NAME})")
	}
	if o.Name == "" {
		o.Name = outputNameFrom(o.Destination.Dir)
		if s := o.Destination.Secret; s != nil {
			o.Name = outputNameFrom(s.Name)
		}
	}
	// The authority checks the name again: it reaches the SSH certificate's key ID.
	if err := identity.CheckName("output name", o.Name); err != nil {
		return badField("name", "%v", err)
	}
	for _, r := range o.Roles {
		if err := identity.CheckName("role", r); err != nil {
			return badField("roles", "%v", err)
		}
	}
	if o.Cluster != "" {
		if err := identity.CheckName("cluster", o.Cluster); err != nil {
			return badField("cluster", "%v", err)
		}
	}
	if err := o.checkOwnerAndReload(); err != nil {
		return err
	}
	if o.Authority != "" {
		if o.Cluster == "" {
			return badField("authority", "names a leaf cluster's authority; set cluster: too, or remove it (the root's is authority: at the top)")
		}
		if _, err := parseAuthorityURL(o.Authority); err != nil {
			return badField("authority", "%v", err)
		}
	}
	return nil
}

// outputNameFrom names an output after its destination directory.
// It is a valid output name, short enough to take a "-NN" suffix when two
// destinations share a base name.
func outputNameFrom(dest string) string {
	base := strings.ToLower(filepath.Base(filepath.Clean(dest)))
	name := strings.Trim(notInName.ReplaceAllString(base, "-"), "-._")
	if len(name) > identity.MaxNameLen-4 {
		name = strings.TrimRight(name[:identity.MaxNameLen-4], "-._")
	}
	if name == "" {
		return OutputTypeIdentity
	}
	return name
}

// canonicalDirs are destination directories as canonicalDir resolves
// them, each resolved once however many outputs it is compared with.
type canonicalDirs map[string]string

func (c canonicalDirs) get(dir string) string {
	if d, ok := c[dir]; ok {
		return d
	}
	c[dir] = canonicalDir(dir)
	return c[dir]
}

// distinct refuses output b when it would write the same directory or
// Secret as output a (named other), or a directory inside it or around it
// (writing the outer one would replace the inner).
func (c canonicalDirs) distinct(da, db Destination, other string) error {
	if da.Secret != nil || db.Secret != nil {
		if da.Secret != nil && db.Secret != nil && da.Secret.Name == db.Secret.Name && da.Secret.Namespace == db.Secret.Namespace {
			return fmt.Errorf("%s is already the destination of %s; give each output its own Secret", db, other)
		}
		return nil
	}
	a, b := da.Dir, db.Dir
	ca, cb := c.get(a), c.get(b)
	switch {
	case ca == cb:
		return fmt.Errorf("%s is already the destination of %s; give each output its own directory", b, other)
	case strings.HasPrefix(cb, ca+string(filepath.Separator)), strings.HasPrefix(ca, cb+string(filepath.Separator)):
		return fmt.Errorf("%s and the destination of %s, %s, are nested; give each output a directory of its own, side by side", b, other, a)
	}
	return nil
}

// canonicalDir is dir as an absolute path, through symbolic links where it exists.
func canonicalDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return filepath.Clean(dir)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

// lookup follows mapping keys and sequence indexes from n; nil if absent.
func lookup(n *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		switch {
		case n == nil:
			return nil
		case n.Kind == yaml.SequenceNode:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(n.Content) {
				return nil
			}
			n = n.Content[i]
		case n.Kind == yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					next = n.Content[i+1]
					break
				}
			}
			n = next
		default:
			return nil
		}
	}
	return n
}

var fieldNotFound = lazyregexp.New(`field (\S+) not found in type client\.(\w+)`)

// configYAMLError turns yaml.v3's "line N: ..." messages into "file:N: ...",
// naming the fields that are allowed where an unknown one was found.
func configYAMLError(path string, root *yaml.Node, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			e = fieldNotFound.ReplaceAllStringFunc(e, func(m string) string {
				sub := fieldNotFound.FindStringSubmatch(m)
				return unknownFieldMessage(root, e, sub[1], sub[2])
			})
			e = strings.ReplaceAll(e, "into []string", "into a list (write [a, b])")
			msgs[i] = path + ":" + strings.TrimPrefix(e, "line ")
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return errors.New(path + ":" + rest)
	}
	return fmt.Errorf("%s: %s", path, msg)
}

// unknownFieldMessage says that field is not one of typ's (a Go type of
// mbot.yaml), with the nearest known field and the known ones. For an
// output they are the fields of that output's own type.
func unknownFieldMessage(root *yaml.Node, yamlErr, field, typ string) string {
	where, known := "mbot.yaml's top level", suggest.YAMLFields(Config{})
	switch typ {
	case "LeafCluster":
		where, known = "a leaf_clusters entry", suggest.YAMLFields(LeafCluster{})
	case "Output":
		line, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(yamlErr, ":", 2)[0], "line "))
		n, outType := outputAt(root, field, line)
		where, known = fmt.Sprintf("output %d (type %s)", n, outType), outputFields(outType)
	}
	msg := fmt.Sprintf("unknown field %q in %s", field, where)
	if near := suggest.Nearest(field, known); near != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", near)
	}
	return msg + "; its fields: " + strings.Join(known, ", ")
}

// outputAt finds the output whose key field is on line: its number from 1
// and its type (identity when it sets none).
func outputAt(root *yaml.Node, field string, line int) (int, string) {
	outputs := lookup(root, "outputs")
	if outputs == nil || outputs.Kind != yaml.SequenceNode {
		return 0, OutputTypeIdentity
	}
	for i, out := range outputs.Content {
		for k := 0; k+1 < len(out.Content); k += 2 {
			if out.Content[k].Value == field && out.Content[k].Line == line {
				typ := OutputTypeIdentity
				if t := lookup(out, "type"); t != nil && t.Value != "" {
					typ = t.Value
				}
				return i + 1, typ
			}
		}
	}
	return 0, OutputTypeIdentity
}
