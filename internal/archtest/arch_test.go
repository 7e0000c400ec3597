package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// maxMainLines bounds a command's main package (all its non-test files).
const maxMainLines = 40

// rule forbids the packages under one tree to depend, directly or through
// other packages, on packages of ours that allowed rejects.
type rule struct {
	tree    string // module-relative directory, e.g. "agent"; "" is every package
	except  string // a directory under tree the rule does not apply to
	allowed func(dep string) bool
	why     string
}

var rules = []rule{
	{"agent", "", func(d string) bool { return !under(d, "controller") },
		"agent/ and controller/ never import each other; they meet only in proto/"},
	{"controller", "", func(d string) bool { return !under(d, "agent") },
		"agent/ and controller/ never import each other; they meet only in proto/"},
	{"distro", "", func(d string) bool { return under(d, "distro") },
		"distro/ imports nothing else of ours"},
	{"proto", "", func(d string) bool { return under(d, "proto") },
		"proto/ is the API both sides share and imports nothing else of ours"},
	{"", "scripts", func(d string) bool { return !under(d, "scripts") },
		"scripts/ are developer helpers; no Go code depends on them"},
}

// pkg is the part of `go list -json` this test reads.
type pkg struct {
	ImportPath   string
	Name         string
	Doc          string
	Dir          string
	GoFiles      []string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

type module struct {
	path string
	pkgs map[string]*pkg // by module-relative path ("" for the root)
}

// rel returns p's path relative to the module and whether p is ours.
func (m *module) rel(importPath string) (string, bool) {
	if importPath == m.path {
		return "", true
	}
	r, ok := strings.CutPrefix(importPath, m.path+"/")
	return r, ok
}

// under reports whether the module-relative path p is dir or below it ("" is
// the whole module).
func under(p, dir string) bool {
	return dir == "" || p == dir || strings.HasPrefix(p, dir+"/")
}

func loadModule(t *testing.T) *module {
	t.Helper()
	out, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	m := &module{path: strings.TrimSpace(string(out)), pkgs: map[string]*pkg{}}
	cmd := exec.Command("go", "list", "-e", "-json", m.path+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list -json %s/...: %v\n%s", m.path, err, stderr.Bytes())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(pkg)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		r, ok := m.rel(p.ImportPath)
		if !ok {
			continue
		}
		if p.Error != nil {
			t.Errorf("%s: go list: %s", p.ImportPath, p.Error.Err)
		}
		m.pkgs[r] = p
	}
	if len(m.pkgs) == 0 {
		t.Fatalf("go list found no packages in %s", m.path)
	}
	return m
}

// ours returns the module-relative paths of the packages of ours in list.
func (m *module) ours(list []string) []string {
	var out []string
	for _, ip := range list {
		if r, ok := m.rel(ip); ok {
			out = append(out, r)
		}
	}
	return out
}

// TestImportRules checks every package (with its tests) against rules. A
// violation names the package, the forbidden package and the import chain
// between them; the chain stops at the first other package of the same tree,
// which is reported on its own.
func TestImportRules(t *testing.T) {
	m := loadModule(t)
	for _, from := range slices.Sorted(maps.Keys(m.pkgs)) {
		p := m.pkgs[from]
		for _, r := range rules {
			if !under(from, r.tree) || (r.except != "" && under(from, r.except)) {
				continue
			}
			direct := map[string]string{} // import -> how ("", "test")
			for _, d := range m.ours(p.Imports) {
				direct[d] = ""
			}
			for _, d := range m.ours(append(slices.Clone(p.TestImports), p.XTestImports...)) {
				if _, ok := direct[d]; !ok && d != from {
					direct[d] = " (in its tests)"
				}
			}
			for _, d := range slices.Sorted(maps.Keys(direct)) {
				if chain := m.forbiddenPath(d, r); chain != nil {
					t.Errorf("%s%s imports %s: %s\n\timport chain: %s",
						show(from), direct[d], show(chain[len(chain)-1]), r.why, strings.Join(mapSlice(append([]string{from}, chain...), show), " -> "))
				}
			}
		}
	}
}

// forbiddenPath returns the shortest import chain from start to a package
// that r does not allow, or nil. It does not look through other packages of
// r's tree: those are checked on their own.
func (m *module) forbiddenPath(start string, r rule) []string {
	parent := map[string]string{start: ""}
	queue := []string{start}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if !r.allowed(cur) {
			var chain []string
			for n := cur; n != ""; n = parent[n] {
				chain = append([]string{n}, chain...)
			}
			return chain
		}
		if r.tree != "" && under(cur, r.tree) {
			continue
		}
		p := m.pkgs[cur]
		if p == nil {
			continue
		}
		for _, d := range m.ours(p.Imports) {
			if _, seen := parent[d]; !seen {
				parent[d] = cur
				queue = append(queue, d)
			}
		}
	}
	return nil
}

// TestPackageDocs checks that every package with non-test Go files has a
// package doc comment, and that a library's starts "Package <name> ".
func TestPackageDocs(t *testing.T) {
	m := loadModule(t)
	for _, r := range slices.Sorted(maps.Keys(m.pkgs)) {
		p := m.pkgs[r]
		if len(p.GoFiles) == 0 {
			continue
		}
		switch {
		case strings.TrimSpace(p.Doc) == "":
			t.Errorf("%s (package %s) has no package doc comment: add `// Package %s ...` above the package clause of one file (a doc.go for generated code)",
				show(r), p.Name, p.Name)
		case p.Name != "main" && !strings.HasPrefix(p.Doc, "Package "+p.Name+" "):
			t.Errorf("%s: package doc comment should start with \"Package %s \", starts %q", show(r), p.Name, firstWords(p.Doc, 4))
		}
	}
}

// TestTinyMains checks that every command (a main package under a cmd/
// directory) only wires a CLI package to stdio, in at most maxMainLines.
func TestTinyMains(t *testing.T) {
	m := loadModule(t)
	found := 0
	for _, r := range slices.Sorted(maps.Keys(m.pkgs)) {
		p := m.pkgs[r]
		if p.Name != "main" || !(strings.HasPrefix(r, "cmd/") || strings.Contains(r, "/cmd/")) {
			continue
		}
		found++
		lines := 0
		for _, f := range p.GoFiles {
			b, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			lines += bytes.Count(b, []byte("\n"))
		}
		if lines > maxMainLines {
			t.Errorf("%s: main package has %d lines in %s, want at most %d: keep main tiny, cli.New(stdin, stdout, stderr).Run(ctx, args) and an exit code (STYLE.md 1)",
				show(r), lines, strings.Join(p.GoFiles, ", "), maxMainLines)
		}
	}
	if found == 0 {
		t.Errorf("no main packages under cmd/ directories: has the layout changed?")
	}
}

func show(rel string) string {
	if rel == "" {
		return "the module root package"
	}
	return rel
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

func mapSlice(s []string, f func(string) string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}
