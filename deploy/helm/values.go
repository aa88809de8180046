// Package helm holds the Helm charts (mbot-authority, mbot-agent) and
// makes each chart's values reference, README.md, from the "# --" comments
// in its values.yaml (go generate ./deploy/helm). Its tests lint and render
// the charts and validate the manifests with a real kube-apiserver.
package helm

//go:generate go run ./gen

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Charts are the charts in this directory.
var Charts = []string{"mbot-authority", "mbot-agent"}

// Value is one documented value of a chart.
type Value struct {
	Path, Default, Doc string
}

// Values reads values.yaml: every key whose comment starts with "# --" is
// a value (its default is what follows it); a key without one must be a
// mapping of such keys. Keys that are neither are returned as undocumented.
func Values(data []byte) (values []Value, undocumented []string, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("values.yaml is not a mapping")
	}
	var walk func(n *yaml.Node, prefix string) error
	walk = func(n *yaml.Node, prefix string) error {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := prefix + k.Value
			if d, ok := docComment(k.HeadComment); ok {
				var buf bytes.Buffer
				enc := yaml.NewEncoder(&buf)
				enc.SetIndent(2)
				v2 := *v
				v2.Style = yaml.FlowStyle
				v2.HeadComment, v2.LineComment, v2.FootComment = "", "", ""
				if err := enc.Encode(&v2); err != nil {
					return err
				}
				values = append(values, Value{Path: p, Default: strings.TrimSpace(buf.String()), Doc: d})
				continue
			}
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				if err := walk(v, p+"."); err != nil {
					return err
				}
				continue
			}
			undocumented = append(undocumented, fmt.Sprintf("%s (line %d)", p, k.Line))
		}
		return nil
	}
	return values, undocumented, walk(doc.Content[0], "")
}

// docComment is the text of the last "# --" comment block of a key.
func docComment(head string) (string, bool) {
	lines := strings.Split(head, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if rest, ok := strings.CutPrefix(l, "# --"); ok {
			text := strings.TrimSpace(rest)
			for _, more := range lines[i+1:] {
				text += " " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(more), "#"))
			}
			return strings.TrimSpace(text), true
		}
	}
	return "", false
}

// Reference is the README.md of the chart in dir: its description and a
// table of its values.
func Reference(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return "", err
	}
	values, undocumented, err := Values(data)
	if err != nil {
		return "", err
	}
	if len(undocumented) > 0 {
		return "", fmt.Errorf("%s/values.yaml: no \"# --\" comment documents %s", dir, strings.Join(undocumented, ", "))
	}
	var chart struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
	}
	meta, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	if err := yaml.Unmarshal(meta, &chart); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n<!-- Generated from values.yaml by go generate ./deploy/helm; do not edit. -->\n\n%s\n\n", chart.Name, chart.Description)
	fmt.Fprintf(&b, "See [docs/kubernetes-deployment.md](../../../docs/kubernetes-deployment.md) for how to deploy it.\n\n")
	b.WriteString("## Values\n\n| value | default | description |\n|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, v := range values {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", v.Path, cell(v.Default), cell(v.Doc))
	}
	return b.String(), nil
}
