package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// ParseError is a cluster file that cannot be decoded: malformed YAML, an
// unknown field, a value of the wrong type, or an unsupported apiVersion or
// kind.
type ParseError struct {
	File   string // as given to Parse; may be empty
	Line   int    // 1-based; 0 if unknown
	Column int    // 1-based; 0 if unknown
	Path   string // field path such as "nodes[1].count", if known
	Msg    string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, "%d:", e.Column)
		}
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and decodes the cluster file at path. See Parse.
func Load(path string) (*Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster file: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes one cluster file. filename is used only in error messages
// and may be empty. Decoding is strict: malformed YAML, more than one
// document, unknown fields, duplicate keys, values of the wrong type and an
// apiVersion or kind other than APIVersion and Kind are *ParseError values
// naming the line and column.
//
// Parse applies no defaults and checks no values; call SetDefaults and
// Validate. The returned cluster remembers the line of every field so that
// Validate's errors can name it.
func Parse(data []byte, filename string) (*Cluster, error) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(err, filename, nil)
	}
	var body ast.Node
	switch docs := nonEmptyDocs(f); len(docs) {
	case 0:
	case 1:
		body = docs[0].Body
	default:
		line, col := nodePos(docs[1].Body)
		return nil, &ParseError{File: filename, Line: line, Column: col,
			Msg: "more than one YAML document; a cluster file holds exactly one"}
	}
	idx := newIndex()
	idx.walk(body, "")

	if err := checkTypeMeta(body, filename, idx); err != nil {
		return nil, err
	}
	c := &Cluster{}
	if err := yaml.NodeToValue(body, c, yaml.DisallowUnknownField()); err != nil {
		return nil, yamlError(err, filename, idx)
	}
	c.file = filename
	c.lines = idx.lines
	return c, nil
}

// Marshal encodes c as a cluster file.
func (c *Cluster) Marshal() ([]byte, error) {
	out, err := yaml.MarshalWithOptions(c, yaml.IndentSequence(true))
	if err != nil {
		return nil, fmt.Errorf("encode cluster %q: %w", c.Name, err)
	}
	return out, nil
}

// typeMeta is the part of a cluster file read before the rest, so that a file
// of another version fails on its apiVersion rather than on its fields.
type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

func checkTypeMeta(body ast.Node, filename string, idx *index) error {
	var tm typeMeta
	if body != nil {
		if err := yaml.NodeToValue(body, &tm); err != nil {
			return yamlError(err, filename, idx)
		}
	}
	fail := func(path, msg string) error {
		return &ParseError{File: filename, Line: idx.lineOf(path), Path: path, Msg: msg}
	}
	switch {
	case tm.APIVersion == "":
		return fail("apiVersion", fmt.Sprintf("required; want %s", APIVersion))
	case tm.APIVersion != APIVersion:
		return fail("apiVersion", fmt.Sprintf("unsupported %q; want %s", tm.APIVersion, APIVersion))
	case tm.Kind == "":
		return fail("kind", fmt.Sprintf("required; want %s", Kind))
	case tm.Kind != Kind:
		return fail("kind", fmt.Sprintf("unsupported %q; want %s", tm.Kind, Kind))
	}
	return nil
}

func nonEmptyDocs(f *ast.File) []*ast.DocumentNode {
	var docs []*ast.DocumentNode
	for _, d := range f.Docs {
		if d != nil && d.Body != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// yamlError turns a go-yaml error into a *ParseError with position and, if
// idx knows the node at that position, the field path.
func yamlError(err error, filename string, idx *index) error {
	var ye yaml.Error
	if !errors.As(err, &ye) {
		return &ParseError{File: filename, Msg: err.Error()}
	}
	pe := &ParseError{File: filename, Msg: ye.GetMessage()}
	if tk := ye.GetToken(); tk != nil && tk.Position != nil {
		pe.Line, pe.Column = tk.Position.Line, tk.Position.Column
		if idx != nil {
			pe.Path = idx.pathAt(pe.Line, pe.Column)
		}
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && te.DstType != nil && te.SrcType != nil {
		// go-yaml names the Go struct field; the path above is what a
		// user can find in the file.
		pe.Msg = fmt.Sprintf("cannot use a %s value as %s", te.SrcType, te.DstType)
	}
	return pe
}

// index maps field paths of a parsed document to lines, and positions of
// keys and values back to paths.
type index struct {
	lines map[string]int    // path -> line of its key (or sequence item)
	at    map[[2]int]string // line, column of a key or value token -> path
}

func newIndex() *index {
	return &index{lines: map[string]int{}, at: map[[2]int]string{}}
}

func (x *index) record(path string, tk *token.Token, isKey bool) {
	if tk == nil || tk.Position == nil {
		return
	}
	pos := [2]int{tk.Position.Line, tk.Position.Column}
	if isKey {
		x.lines[path] = tk.Position.Line
	}
	if _, ok := x.at[pos]; !ok || !isKey {
		x.at[pos] = path
	}
}

func (x *index) walk(n ast.Node, path string) {
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, v := range n.Values {
			x.walk(v, path)
		}
	case *ast.MappingValueNode:
		key := n.Key.GetToken()
		if key == nil {
			return
		}
		p := key.Value
		if path != "" {
			p = path + "." + key.Value
		}
		x.record(p, key, true)
		if n.Value != nil {
			x.record(p, n.Value.GetToken(), false)
		}
		x.walk(n.Value, p)
	case *ast.SequenceNode:
		for i, v := range n.Values {
			p := path + "[" + strconv.Itoa(i) + "]"
			if line, _ := nodePos(v); line > 0 {
				x.lines[p] = line
			}
			if v != nil {
				x.record(p, v.GetToken(), false)
			}
			x.walk(v, p)
		}
	case *ast.TagNode:
		x.walk(n.Value, path)
	case *ast.AnchorNode:
		x.walk(n.Value, path)
	}
}

// pathAt returns the path of the key or value at line:col, or else of the
// last key on that line, or "".
func (x *index) pathAt(line, col int) string {
	if p, ok := x.at[[2]int{line, col}]; ok {
		return p
	}
	best, bestCol := "", 0
	for pos, p := range x.at {
		if pos[0] == line && pos[1] <= col && pos[1] >= bestCol {
			best, bestCol = p, pos[1]
		}
	}
	return best
}

// lineOf returns the line of path or, if path is not in the file (a default,
// say), of its closest ancestor; 0 if none is.
func (x *index) lineOf(path string) int {
	return lineOf(x.lines, path)
}

func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		path = parentPath(path)
	}
	return 0
}

// parentPath strips the last ".field" or "[i]" of path.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// nodePos is the position where n starts: for a mapping, its first key.
func nodePos(n ast.Node) (line, col int) {
	if m, ok := n.(*ast.MappingNode); ok && len(m.Values) > 0 {
		n = m.Values[0].Key
	}
	if mv, ok := n.(*ast.MappingValueNode); ok {
		n = mv.Key
	}
	if n == nil {
		return 0, 0
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return 0, 0
	}
	return tk.Position.Line, tk.Position.Column
}
