package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// AptSource is one entry of the host's apt sources, from either format.
type AptSource struct {
	Types      []string // deb, deb-src
	URIs       []string
	Suites     []string
	Components []string
	File       string // where it was read, for messages
}

// ReadAptSources reads the host's apt sources under aptDir the way apt does: sources.list,
// then sources.list.d/*.list and *.sources in lexical order. Disabled deb822 entries
// (Enabled: no) are left out; files with other names are ignored.
func ReadAptSources(aptDir string) ([]AptSource, error) {
	var out []AptSource
	main := filepath.Join(aptDir, "sources.list")
	if data, err := os.ReadFile(main); err == nil {
		out = append(out, ParseOneLineSources(data, main)...)
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("read apt sources: %w", err)
	}
	dir := filepath.Join(aptDir, "sources.list.d")
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read apt sources: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		switch filepath.Ext(n) {
		case ".list":
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("read apt sources: %w", err)
			}
			out = append(out, ParseOneLineSources(data, p)...)
		case ".sources":
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("read apt sources: %w", err)
			}
			s, err := ParseDeb822Sources(data, p)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
	}
	return out, nil
}

// ParseOneLineSources parses the classic format: "deb [opts] uri suite [component...]".
func ParseOneLineSources(data []byte, file string) []AptSource {
	var out []AptSource
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != "deb" && f[0] != "deb-src") {
			continue
		}
		typ, rest := f[0], f[1:]
		if len(rest) > 0 && strings.HasPrefix(rest[0], "[") {
			// Options: "[a=b c=d]", possibly split over fields.
			for len(rest) > 0 {
				done := strings.HasSuffix(rest[0], "]")
				rest = rest[1:]
				if done {
					break
				}
			}
		}
		if len(rest) < 2 {
			continue
		}
		out = append(out, AptSource{
			Types: []string{typ}, URIs: []string{rest[0]}, Suites: []string{rest[1]},
			Components: rest[2:], File: file,
		})
	}
	return out
}

// ParseDeb822Sources parses the deb822 format: paragraphs of "Field: value" lines separated by
// blank lines, '#' comments, continuation lines starting with white space.
func ParseDeb822Sources(data []byte, file string) ([]AptSource, error) {
	var out []AptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		if len(fields) > 0 && !strings.EqualFold(fields["enabled"], "no") {
			out = append(out, AptSource{
				Types:      strings.Fields(fields["types"]),
				URIs:       strings.Fields(fields["uris"]),
				Suites:     strings.Fields(fields["suites"]),
				Components: strings.Fields(fields["components"]),
				File:       file,
			})
		}
		fields, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("parse %s:%d: continuation line outside a field", file, n)
			}
			fields[last] += " " + strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("parse %s:%d: expected \"Field: value\"", file, n)
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out, nil
}

// ResolvedArchive is a recipe archive with the URI taken from the host's sources.
type ResolvedArchive struct {
	Name       string
	URI        string // without a trailing slash
	Suites     []string
	Components []string
}

// SourceLines renders the archive as one-line apt sources, one per suite.
func (a ResolvedArchive) SourceLines() []string {
	lines := make([]string, 0, len(a.Suites))
	for _, s := range a.Suites {
		lines = append(lines, strings.Join(append([]string{"deb", a.URI, s}, a.Components...), " "))
	}
	return lines
}

// ResolveArchives picks, for each archive of the recipe, the URI of the first binary ("deb")
// host source whose suites include the archive's match suite; failing that, the first whose URI
// path ends with the match path suffix. Every archive must resolve.
func ResolveArchives(r *Recipe, sources []AptSource) ([]ResolvedArchive, error) {
	out := make([]ResolvedArchive, 0, len(r.Archives))
	for _, a := range r.Archives {
		uri := ""
		for _, s := range sources {
			if slices.Contains(s.Types, "deb") && len(s.URIs) > 0 && slices.Contains(s.Suites, a.Match.Suite) {
				uri = s.URIs[0]
				break
			}
		}
		if uri == "" && a.Match.PathSuffix != "" {
		search:
			for _, s := range sources {
				if !slices.Contains(s.Types, "deb") {
					continue
				}
				for _, u := range s.URIs {
					pu, err := url.Parse(u)
					if err == nil && strings.HasSuffix(strings.TrimRight(pu.Path, "/"), a.Match.PathSuffix) {
						uri = u
						break search
					}
				}
			}
		}
		if uri == "" {
			return nil, fmt.Errorf("resolve archive %q of recipe %s: no host apt source has suite %q or a URI ending in %q",
				a.Name, r.Name, a.Match.Suite, a.Match.PathSuffix)
		}
		if pu, err := url.Parse(uri); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("resolve archive %q of recipe %s: host source URI %q is not an http(s) URL",
				a.Name, r.Name, uri)
		}
		out = append(out, ResolvedArchive{
			Name: a.Name, URI: strings.TrimRight(uri, "/"), Suites: a.Suites, Components: r.Components,
		})
	}
	return out, nil
}
