// Package cispec reads mbot's CI integrations the way their platforms do,
// for the tests: the GitLab CI/CD component (spec:inputs header, $[[ inputs.x ]]
// interpolation) and the CircleCI orb source (orb-tools src/ layout,
// <<include(file)>>, << parameters.x >>).
package cispec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// GitLabInput is one entry of a component's spec:inputs.
type GitLabInput struct {
	Description string   `yaml:"description"`
	Default     *string  `yaml:"default"` // nil: the input is mandatory
	Type        string   `yaml:"type"`
	Options     []string `yaml:"options"`
	Regex       string   `yaml:"regex"`
}

// GitLabComponent is a component template: its header and its body.
type GitLabComponent struct {
	Inputs     map[string]GitLabInput
	InputOrder []string
	// Body is the configuration after the header, not yet interpolated.
	Body *yaml.Node
	// Text is the body's text.
	Text string
}

var inputRef = regexp.MustCompile(`\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*\]\]`)

// LoadGitLabComponent reads a component template: a `spec:` document, `---`,
// then the configuration.
func LoadGitLabComponent(path string) (*GitLabComponent, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var header struct {
		Spec struct {
			Inputs yaml.Node `yaml:"inputs"`
		} `yaml:"spec"`
	}
	var headerNode yaml.Node
	if err := dec.Decode(&headerNode); err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	if err := headerNode.Decode(&header); err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	if header.Spec.Inputs.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: the first document has no spec:inputs mapping", path)
	}
	c := &GitLabComponent{Inputs: map[string]GitLabInput{}}
	in := header.Spec.Inputs.Content
	for i := 0; i+1 < len(in); i += 2 {
		var inp GitLabInput
		if in[i+1].Kind != yaml.ScalarNode || in[i+1].Tag != "!!null" {
			if err := in[i+1].Decode(&inp); err != nil {
				return nil, fmt.Errorf("%s: input %s: %w", path, in[i].Value, err)
			}
		}
		c.Inputs[in[i].Value] = inp
		c.InputOrder = append(c.InputOrder, in[i].Value)
	}
	var body yaml.Node
	if err := dec.Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: no configuration after the spec header and ---: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than two YAML documents", path)
	}
	c.Body = &body
	_, text, _ := bytes.Cut(data, []byte("\n---\n"))
	c.Text = string(text)
	return c, nil
}

// Referenced lists the inputs the body interpolates, sorted.
func (c *GitLabComponent) Referenced() []string {
	var names []string
	for _, m := range inputRef.FindAllStringSubmatch(c.Text, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	sort.Strings(names)
	return names
}

// Render interpolates the inputs as GitLab does when the component is
// included with include:inputs: given values, else defaults. It fails on a
// mandatory input without a value or an unknown one, and returns the
// configuration as plain maps.
func (c *GitLabComponent) Render(given map[string]string) (map[string]any, error) {
	values := map[string]string{}
	for name, v := range given {
		if _, ok := c.Inputs[name]; !ok {
			return nil, fmt.Errorf("unknown input %q", name)
		}
		values[name] = v
	}
	for name, inp := range c.Inputs {
		if _, ok := values[name]; ok {
			continue
		}
		if inp.Default == nil {
			return nil, fmt.Errorf("input %q is mandatory", name)
		}
		values[name] = *inp.Default
	}
	var failed error
	body := cloneNode(c.Body)
	walkScalars(body, func(n *yaml.Node) {
		n.Value = inputRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := inputRef.FindStringSubmatch(ref)[1]
			v, ok := values[name]
			if !ok {
				failed = fmt.Errorf("$[[ inputs.%s ]] is not declared in spec:inputs", name)
			}
			return v
		})
	})
	if failed != nil {
		return nil, failed
	}
	var out map[string]any
	if err := body.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// Orb is a packed orb: @orb.yml with commands/, jobs/, executors/ and
// examples/ merged in and every <<include(file)>> replaced by the file.
type Orb map[string]any

var includeRef = regexp.MustCompile(`^<<\s*include\(([^)]+)\)\s*>>$`)

// PackOrb packs an orb source directory (orb-tools layout: src/@orb.yml,
// src/commands/*.yml, ...), as `circleci orb pack` does.
func PackOrb(src string) (Orb, error) {
	root, err := readYAMLNode(filepath.Join(src, "@orb.yml"))
	if err != nil {
		return nil, err
	}
	var orb map[string]any
	if err := root.Decode(&orb); err != nil {
		return nil, err
	}
	for _, section := range []string{"commands", "jobs", "executors", "examples"} {
		files, err := filepath.Glob(filepath.Join(src, section, "*.yml"))
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			continue
		}
		if _, ok := orb[section]; ok {
			return nil, fmt.Errorf("@orb.yml defines %s and so does the %s/ directory", section, section)
		}
		items := map[string]any{}
		for _, f := range files {
			n, err := readYAMLNode(f)
			if err != nil {
				return nil, err
			}
			var includeErr error
			walkScalars(n, func(s *yaml.Node) {
				m := includeRef.FindStringSubmatch(strings.TrimSpace(s.Value))
				if m == nil {
					return
				}
				data, err := os.ReadFile(filepath.Join(src, m[1]))
				if err != nil {
					includeErr = fmt.Errorf("%s: %w", f, err)
					return
				}
				s.Value, s.Style, s.Tag = string(data), yaml.LiteralStyle, "!!str"
			})
			if includeErr != nil {
				return nil, includeErr
			}
			var item any
			if err := n.Decode(&item); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			items[strings.TrimSuffix(filepath.Base(f), ".yml")] = item
		}
		orb[section] = items
	}
	return orb, nil
}

var paramRef = regexp.MustCompile(`<<\s*parameters\.([A-Za-z0-9_-]+)\s*>>`)

// ParameterRefs lists the parameters that s refers to.
func ParameterRefs(s string) []string {
	var names []string
	for _, m := range paramRef.FindAllStringSubmatch(s, -1) {
		names = append(names, m[1])
	}
	return names
}

// RunStep is a `run:` step of a command after parameter substitution.
type RunStep struct {
	Name        string
	Command     string
	Environment map[string]string
}

// CommandRunSteps substitutes the parameters of command name (given values,
// else defaults) into its steps and returns them; every step must be a run step.
func (o Orb) CommandRunSteps(name string, given map[string]string) ([]RunStep, error) {
	commands, _ := o["commands"].(map[string]any)
	cmd, ok := commands[name].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the orb has no command %q", name)
	}
	params, _ := cmd["parameters"].(map[string]any)
	values := map[string]string{}
	for p, spec := range params {
		if v, ok := given[p]; ok {
			values[p] = v
			continue
		}
		def, ok := spec.(map[string]any)["default"]
		if !ok {
			return nil, fmt.Errorf("parameter %q has no default and no value", p)
		}
		values[p] = fmt.Sprint(def)
	}
	for p := range given {
		if _, ok := params[p]; !ok {
			return nil, fmt.Errorf("command %s has no parameter %q", name, p)
		}
	}
	var failed error
	subst := func(s string) string {
		return paramRef.ReplaceAllStringFunc(s, func(ref string) string {
			p := paramRef.FindStringSubmatch(ref)[1]
			v, ok := values[p]
			if !ok {
				failed = fmt.Errorf("<< parameters.%s >> is not a parameter of %s", p, name)
			}
			return v
		})
	}
	steps, _ := cmd["steps"].([]any)
	var out []RunStep
	for i, s := range steps {
		m, _ := s.(map[string]any)
		run, ok := m["run"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("step %d of %s is not a run step with a mapping", i, name)
		}
		step := RunStep{Name: fmt.Sprint(run["name"]), Command: subst(fmt.Sprint(run["command"])), Environment: map[string]string{}}
		env, _ := run["environment"].(map[string]any)
		for k, v := range env {
			step.Environment[k] = subst(fmt.Sprint(v))
		}
		out = append(out, step)
	}
	if failed != nil {
		return nil, failed
	}
	return out, nil
}

func readYAMLNode(path string) (*yaml.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &n, nil
}

func walkScalars(n *yaml.Node, f func(*yaml.Node)) {
	if n.Kind == yaml.ScalarNode {
		f(n)
	}
	for _, c := range n.Content {
		walkScalars(c, f)
	}
}

func cloneNode(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = nil
	for _, k := range n.Content {
		c.Content = append(c.Content, cloneNode(k))
	}
	return &c
}
