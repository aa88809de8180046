package resources

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Document is a resource in the shape it is written in (SPEC §2), for
// mbot get -o yaml|json; both forms are read back by Parse (mbot apply).
type Document struct {
	Kind     string   `yaml:"kind" json:"kind"`
	Version  string   `yaml:"version" json:"version"`
	Metadata Metadata `yaml:"metadata" json:"metadata"`
	Spec     any      `yaml:"spec" json:"spec"`
}

// Document returns the role as written.
func (r *Role) Document() Document {
	spec := r.Spec
	spec.Logins = nonNil(spec.Logins)
	return Document{Kind: KindRole, Version: "v1", Metadata: r.Metadata, Spec: spec}
}

// Document returns the bot as written.
func (b *Bot) Document() Document {
	spec := b.Spec
	spec.Roles = nonNil(spec.Roles)
	return Document{Kind: KindBot, Version: "v1", Metadata: b.Metadata, Spec: spec}
}

// Document returns the join token as written, its method's section included.
func (t *JoinToken) Document() Document {
	return Document{Kind: KindJoinToken, Version: "v1", Metadata: t.Metadata,
		Spec: joinTokenSpecDocument{Bot: t.Spec.Bot, Method: t.Spec.Method, Sections: t.Spec.Sections}}
}

// Documents returns the resources of kind (all kinds when empty) in a
// stable order: roles, bots, join tokens, databases, Kubernetes clusters,
// each sorted by name.
func (s *Set) Documents(kind string) []Document {
	var docs []Document
	if kind == "" || kind == KindRole {
		for _, name := range slices.Sorted(maps.Keys(s.Roles)) {
			docs = append(docs, s.Roles[name].Document())
		}
	}
	if kind == "" || kind == KindBot {
		for _, name := range slices.Sorted(maps.Keys(s.Bots)) {
			docs = append(docs, s.Bots[name].Document())
		}
	}
	if kind == "" || kind == KindJoinToken {
		for _, name := range slices.Sorted(maps.Keys(s.JoinTokens)) {
			docs = append(docs, s.JoinTokens[name].Document())
		}
	}
	if kind == "" || kind == KindDatabase {
		for _, name := range slices.Sorted(maps.Keys(s.Databases)) {
			docs = append(docs, s.Databases[name].Document())
		}
	}
	if kind == "" || kind == KindKubernetesCluster {
		for _, name := range slices.Sorted(maps.Keys(s.KubernetesClusters)) {
			docs = append(docs, s.KubernetesClusters[name].Document())
		}
	}
	if kind == "" || kind == KindTrustedCluster {
		for _, name := range slices.Sorted(maps.Keys(s.TrustedClusters)) {
			docs = append(docs, s.TrustedClusters[name].Document())
		}
	}
	if kind == "" || kind == KindLeafCluster {
		for _, name := range slices.Sorted(maps.Keys(s.LeafClusters)) {
			docs = append(docs, s.LeafClusters[name].Document())
		}
	}
	return docs
}

// MarshalYAMLDocuments renders docs as YAML documents separated by "---".
func MarshalYAMLDocuments(docs []Document) ([]byte, error) {
	if len(docs) == 0 {
		return nil, nil // an empty stream: yaml.v3 cannot close an encoder that wrote nothing
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", d.Kind, d.Metadata.Name, err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// joinTokenSpecDocument writes a join token's spec with its method's
// section, which JoinTokenSpec keeps as a YAML node.
type joinTokenSpecDocument struct {
	Bot, Method string
	Sections    map[string]yaml.Node
}

func (s joinTokenSpecDocument) MarshalYAML() (any, error) {
	out := struct {
		Bot      string                `yaml:"bot"`
		Method   string                `yaml:"method"`
		Sections map[string]*yaml.Node `yaml:",inline"`
	}{Bot: s.Bot, Method: s.Method, Sections: map[string]*yaml.Node{}}
	for k, n := range s.Sections {
		out.Sections[k] = blockStyle(&n)
	}
	return out, nil
}

// MarshalJSON writes bot, method and then the section, keeping each
// scalar as written (ref_protected: true stays a boolean, "1.10" a string).
func (s joinTokenSpecDocument) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"bot":`)
	writeJSONString(&buf, s.Bot)
	buf.WriteString(`,"method":`)
	writeJSONString(&buf, s.Method)
	for _, k := range slices.Sorted(maps.Keys(s.Sections)) {
		n := s.Sections[k]
		buf.WriteByte(',')
		writeJSONString(&buf, k)
		buf.WriteByte(':')
		if err := writeNodeJSON(&buf, &n); err != nil {
			return nil, fmt.Errorf("spec.%s: %w", k, err)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// writeNodeJSON writes a YAML node as JSON. Strings stay strings; booleans,
// nulls and numbers that JSON can spell as written keep their type.
func writeNodeJSON(buf *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			buf.WriteString("null")
			return nil
		}
		return writeNodeJSON(buf, n.Content[0])
	case yaml.AliasNode:
		return writeNodeJSON(buf, n.Alias)
	case yaml.MappingNode:
		buf.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(buf, n.Content[i].Value)
			buf.WriteByte(':')
			if err := writeNodeJSON(buf, n.Content[i+1]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeNodeJSON(buf, c); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			buf.WriteString("null")
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return err
			}
			buf.WriteString(strconv.FormatBool(b))
		case "!!int", "!!float":
			if json.Valid([]byte(n.Value)) {
				buf.WriteString(n.Value)
			} else {
				writeJSONString(buf, n.Value)
			}
		default:
			writeJSONString(buf, n.Value)
		}
	default:
		return fmt.Errorf("line %d: cannot write this YAML node as JSON", n.Line)
	}
	return nil
}

func writeJSONString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// blockStyle copies n without flow style and quoting, so that a section
// applied as JSON is listed in the same YAML style as the rest. The
// encoder still quotes a string that would otherwise read as another type.
func blockStyle(n *yaml.Node) *yaml.Node {
	c := *n
	c.Style &^= yaml.FlowStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle
	if n.Content != nil {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, child := range n.Content {
			c.Content[i] = blockStyle(child)
		}
	}
	return &c
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
