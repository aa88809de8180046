package resources

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
)

// ListToDocuments rewrites a file whose top level is a list of resources
// (the JSON array that mbot get -o json prints, or a YAML sequence) as the
// stream of YAML documents that Parse reads. Every key keeps the line it is
// on in the original wherever the list leaves room for the "---" between
// items (always, for JSON printed one field per line), so Parse's errors
// still point into the original file. Anything else is returned unchanged.
func ListToDocuments(data []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return data, nil // not YAML: Parse says where
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.SequenceNode {
		return data, nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return data, nil // a list among other documents: Parse refuses it with its line
	}
	w := &lineWriter{line: 1}
	for _, item := range doc.Content[0].Content {
		w.startDocument(item.Line)
		if err := w.node(item); err != nil {
			return nil, err
		}
	}
	if w.buf.Len() > 0 {
		w.buf.WriteByte('\n')
	}
	return w.buf.Bytes(), nil
}

// lineWriter writes YAML nodes as flow (JSON) text, each on its original line when it can.
type lineWriter struct {
	buf  bytes.Buffer
	line int // the line being written, from 1
}

// startDocument begins a document ("--- ") on line, or on a new line if
// the writer is already past it.
func (w *lineWriter) startDocument(line int) {
	if w.buf.Len() > 0 || w.line < line {
		w.buf.WriteByte('\n')
		w.line++
	}
	for w.line < line {
		w.buf.WriteByte('\n')
		w.line++
	}
	w.buf.WriteString("--- ")
}

// moveTo goes down to line, indented to column, if the writer is above it.
// Flow collections may span lines, so this never changes what is read.
func (w *lineWriter) moveTo(line, column int) {
	if w.line >= line {
		return
	}
	w.buf.WriteString(strings.Repeat("\n", line-w.line))
	w.line = line
	w.buf.WriteString(strings.Repeat(" ", max(column-1, 1)))
}

func (w *lineWriter) node(n *yaml.Node) error {
	w.moveTo(n.Line, n.Column)
	switch n.Kind {
	case yaml.MappingNode:
		w.buf.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				w.buf.WriteByte(',')
			}
			key := n.Content[i]
			w.moveTo(key.Line, key.Column)
			writeJSONString(&w.buf, key.Value)
			w.buf.WriteString(": ")
			if err := w.node(n.Content[i+1]); err != nil {
				return err
			}
		}
		w.buf.WriteByte('}')
	case yaml.SequenceNode:
		w.buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				w.buf.WriteByte(',')
			}
			if err := w.node(item); err != nil {
				return err
			}
		}
		w.buf.WriteByte(']')
	case yaml.AliasNode:
		return w.node(n.Alias)
	case yaml.ScalarNode:
		return writeNodeJSON(&w.buf, n)
	default:
		return fmt.Errorf("line %d: unexpected YAML node in a list of resources", n.Line)
	}
	return nil
}
