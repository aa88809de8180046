package client

import (
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/client/kubesecret"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
	"gopkg.in/yaml.v3"
)

// DestinationKubernetesSecret is the destination type that writes an
// output into a Kubernetes Secret instead of a directory.
const DestinationKubernetesSecret = "kubernetes_secret"

// Destination is where an output is written, whatever its type: a
// directory (destination: ./db) or a Kubernetes Secret:
//
//	destination:
//	  type: kubernetes_secret
//	  name: ci-db              # the Secret; its keys are the output's file names
//	  namespace: ci            # default: the pod's (or the kubeconfig context's)
//	  labels: {team: payments} # added to the Secret's labels
type Destination struct {
	// Dir is the directory; a relative path is relative to the working
	// directory, like --out.
	Dir string
	// Secret, when set, is the Secret written instead of a directory.
	Secret *SecretDestination
}

// SecretDestination is destination: {type: kubernetes_secret, ...}.
type SecretDestination struct {
	Type      string            `yaml:"type"`
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
	// MountPath is where pods mount the Secret: the files that name other
	// files (ssh_config, pg_service.conf, env, my.cnf) name them there.
	// Default /var/run/secrets/mbot/<name>.
	MountPath string `yaml:"mount_path"`
}

// secretDestinationFields are the fields destination: takes as a mapping.
var secretDestinationFields = []string{"type", "name", "namespace", "labels", "mount_path"}

func (d *Destination) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		d.Dir = n.Value
		return nil
	case yaml.MappingNode:
	default:
		return fmt.Errorf("line %d: destination: is a directory (destination: ./out) or a Secret (destination: {type: kubernetes_secret, name: NAME})", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(secretDestinationFields, k.Value) {
			return fmt.Errorf("line %d: unknown field %q in destination (known fields: %s)", k.Line, k.Value, strings.Join(secretDestinationFields, ", "))
		}
	}
	var s SecretDestination
	if err := n.Decode(&s); err != nil {
		return err
	}
	d.Secret = &s
	return nil
}

// String is the destination for messages: the directory, or "Secret ns/name".
func (d Destination) String() string {
	if d.Secret == nil {
		return d.Dir
	}
	ns := d.Secret.Namespace
	if ns == "" {
		ns = "<the pod's namespace>"
	}
	return "Secret " + ns + "/" + d.Secret.Name
}

// dnsSubdomain and dnsLabel are Kubernetes' object names (RFC 1123).
var (
	dnsSubdomain = lazyregexp.New(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dnsLabel     = lazyregexp.New(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelName    = lazyregexp.New(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
)

// checkAndSetDefaults checks a Secret destination as the API server
// would, so that a bad name is refused before the join.
func (s *SecretDestination) checkAndSetDefaults() error {
	if s.Type != DestinationKubernetesSecret {
		return badField("destination.type", "%s is not a destination type; a mapping destination is {type: %s, name: NAME}, a directory is written as destination: ./dir",
			identity.Quote(s.Type), DestinationKubernetesSecret)
	}
	if s.Name == "" {
		return badField("destination.name", "is required: the name of the Secret to write")
	}
	if len(s.Name) > 253 || !dnsSubdomain.MatchString(s.Name) {
		return badField("destination.name", "%s is not a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253)", identity.Quote(s.Name))
	}
	if s.Namespace != "" && (len(s.Namespace) > 63 || !dnsLabel.MatchString(s.Namespace)) {
		return badField("destination.namespace", "%s is not a namespace: lower-case letters, digits and '-', starting and ending with a letter or digit (at most 63)", identity.Quote(s.Namespace))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		if err := checkLabel(k, s.Labels[k]); err != nil {
			return badField("destination.labels", "%v", err)
		}
	}
	if s.MountPath == "" {
		s.MountPath = "/var/run/secrets/mbot/" + s.Name
	}
	if !path.IsAbs(s.MountPath) || path.Clean(s.MountPath) != s.MountPath {
		return badField("destination.mount_path", "%s is not a clean absolute path, such as /var/run/secrets/mbot/%s", identity.Quote(s.MountPath), s.Name)
	}
	return nil
}

// checkLabel checks a label as the API server does (a qualified name and
// a value of at most 63 characters).
func checkLabel(key, value string) error {
	prefix, name, ok := strings.Cut(key, "/")
	if !ok {
		prefix, name = "", key
	}
	if ok && (len(prefix) > 253 || !dnsSubdomain.MatchString(prefix)) || len(name) > 63 || !labelName.MatchString(name) {
		return fmt.Errorf("label %s is not a label name: [prefix/]name, where name has letters, digits, '-', '_' and '.' (at most 63)", identity.Quote(key))
	}
	if key == kubesecret.ManagedByLabel {
		return fmt.Errorf("label %s is mbot's own (%s=%s marks the Secrets it writes); remove it", key, kubesecret.ManagedByLabel, kubesecret.ManagedByValue)
	}
	if value != "" && (len(value) > 63 || !labelName.MatchString(value)) {
		return fmt.Errorf("label %s: value %s is not a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit (at most 63)", key, identity.Quote(value))
	}
	return nil
}

// secretKey is a valid Secret data key ([-._a-zA-Z0-9]+).
var secretKey = lazyregexp.New(`^[-._a-zA-Z0-9]+$`)

// secretType is the Secret type of an output's files: kubernetes.io/tls
// when they hold tls.crt and tls.key (the keys that type requires, which
// ingress controllers and mounted TLS consumers read), else Opaque.
func secretType(files []identity.File) string {
	has := func(name string) bool {
		return slices.ContainsFunc(files, func(f identity.File) bool { return f.Name == name })
	}
	if has(identity.FileTLSCert) && has(identity.FileTLSKey) {
		return kubesecret.TypeTLS
	}
	return kubesecret.TypeOpaque
}

// kubeTargets writes the outputs whose destination is a Secret, through
// one client made when the first one is needed.
type kubeTargets struct {
	env    kubesecret.Env
	client *kubesecret.Client
}

func (k *kubeTargets) clientFor() (*kubesecret.Client, error) {
	if k.client == nil {
		cfg, err := kubesecret.Load(k.env)
		if err != nil {
			return nil, err
		}
		k.client = kubesecret.New(cfg)
	}
	return k.client, nil
}

// ref is the Secret of a destination, in the client's default namespace
// when it names none.
func (k *kubeTargets) ref(out Output) (kubesecret.Ref, error) {
	c, err := k.clientFor()
	if err != nil {
		return kubesecret.Ref{}, err
	}
	s := out.Destination.Secret
	ns := s.Namespace
	if ns == "" {
		ns = c.Config().Namespace
	}
	return kubesecret.Ref{Namespace: ns, Name: s.Name, Labels: s.Labels, Role: "the Role bound to " + identity.Quote(c.Config().Source)}, nil
}

// check refuses a Secret mbot may not write before the join.
func (k *kubeTargets) check(ctx context.Context, out Output) error {
	r, err := k.ref(out)
	if err != nil {
		return err
	}
	// The Secret's type follows the files, known after the join: Write checks it.
	return k.client.Check(ctx, r, "")
}

// write replaces the Secret's data with files.
func (k *kubeTargets) write(ctx context.Context, out Output, files []identity.File) (kubesecret.Result, error) {
	r, err := k.ref(out)
	if err != nil {
		return kubesecret.Result{}, err
	}
	data := make(map[string][]byte, len(files))
	for _, f := range files {
		if !secretKey.MatchString(f.Name) {
			return kubesecret.Result{}, fmt.Errorf("%s: the file name %s cannot be a Secret key", r, identity.Quote(f.Name))
		}
		data[f.Name] = f.Data
	}
	return k.client.Write(ctx, r, secretType(files), data)
}

// read returns the data of a destination's Secret, nil when it does not exist.
func (k *kubeTargets) read(ctx context.Context, out Output) (map[string][]byte, error) {
	r, err := k.ref(out)
	if err != nil {
		return nil, err
	}
	return k.client.Read(ctx, r)
}

func (k *kubeTargets) close() {
	if k != nil && k.client != nil {
		k.client.CloseIdleConnections()
	}
}
