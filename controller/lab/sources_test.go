package lab

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const debianSources = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

func TestParseDeb822Sources(t *testing.T) {
	got, err := ParseDeb822Sources([]byte(debianSources+`
Types: deb deb-src
URIs: http://a.example/debian
  http://b.example/debian
Suites: trixie
Components: main
 contrib
Enabled: no

types: deb
uris: https://c.example/x
suites: stable
components: main
`), "f")
	if err != nil {
		t.Fatal(err)
	}
	want := []AptSource{
		{Types: []string{"deb"}, URIs: []string{"http://deb.debian.org/debian"}, Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main"}, File: "f"},
		{Types: []string{"deb"}, URIs: []string{"http://deb.debian.org/debian-security"}, Suites: []string{"bookworm-security"}, Components: []string{"main"}, File: "f"},
		{Types: []string{"deb"}, URIs: []string{"https://c.example/x"}, Suites: []string{"stable"}, Components: []string{"main"}, File: "f"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if _, err := ParseDeb822Sources([]byte(" leading continuation\n"), "f"); err == nil {
		t.Fatal("continuation outside a field: no error")
	}
	if _, err := ParseDeb822Sources([]byte("no colon here\n"), "f"); err == nil {
		t.Fatal("line without colon: no error")
	}
}

func TestParseOneLineSources(t *testing.T) {
	got := ParseOneLineSources([]byte(`# comment
deb http://deb.debian.org/debian bookworm main contrib # trailing
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://security.debian.org/debian-security bookworm-security main
deb [ trusted=yes ] http://x.example/debian bookworm-updates main
deb http://incomplete.example
#deb http://commented.example/debian bookworm main
`), "l")
	want := []AptSource{
		{Types: []string{"deb"}, URIs: []string{"http://deb.debian.org/debian"}, Suites: []string{"bookworm"}, Components: []string{"main", "contrib"}, File: "l"},
		{Types: []string{"deb-src"}, URIs: []string{"http://deb.debian.org/debian"}, Suites: []string{"bookworm"}, Components: []string{"main"}, File: "l"},
		{Types: []string{"deb"}, URIs: []string{"http://security.debian.org/debian-security"}, Suites: []string{"bookworm-security"}, Components: []string{"main"}, File: "l"},
		{Types: []string{"deb"}, URIs: []string{"http://x.example/debian"}, Suites: []string{"bookworm-updates"}, Components: []string{"main"}, File: "l"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestReadAptSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sources.list", "deb http://list.example/debian bookworm main\n")
	write("sources.list.d/b.sources", debianSources)
	write("sources.list.d/a.list", "deb http://a.example/debian bookworm main\n")
	write("sources.list.d/c.sources.disabled-by-farm", "Types: deb\nURIs: http://off.example/x\nSuites: s\n")
	got, err := ReadAptSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, s := range got {
		uris = append(uris, s.URIs[0])
	}
	want := []string{"http://list.example/debian", "http://a.example/debian", "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"}
	if !reflect.DeepEqual(uris, want) {
		t.Fatalf("order: got %v, want %v", uris, want)
	}
	if _, err := ReadAptSources(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("missing apt dir: %v", err)
	}
}

func TestResolveArchives(t *testing.T) {
	r := mustRecipe(t)
	src, err := ParseDeb822Sources([]byte(debianSources), "f")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ResolveArchives(r, src)
	if err != nil {
		t.Fatal(err)
	}
	want := []ResolvedArchive{
		{Name: "mirror", URI: "http://deb.debian.org/debian", Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main"}},
		{Name: "security", URI: "http://deb.debian.org/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if l := got[0].SourceLines(); !reflect.DeepEqual(l, []string{
		"deb http://deb.debian.org/debian bookworm main",
		"deb http://deb.debian.org/debian bookworm-updates main",
	}) {
		t.Fatalf("source lines: %q", l)
	}

	t.Run("path suffix fallback on another release", func(t *testing.T) {
		other := ParseOneLineSources([]byte(`deb https://nodesource.example/node_20.x nodistro main
deb http://mirror.example/debian/ trixie main
deb http://mirror.example/debian-security trixie-security main
`), "l")
		got, err := ResolveArchives(r, other)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].URI != "http://mirror.example/debian" || got[1].URI != "http://mirror.example/debian-security" {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("deb-src only does not count", func(t *testing.T) {
		_, err := ResolveArchives(r, ParseOneLineSources([]byte("deb-src http://m.example/debian bookworm main\n"), "l"))
		if err == nil || !strings.Contains(err.Error(), `archive "mirror"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("not http", func(t *testing.T) {
		_, err := ResolveArchives(r, ParseOneLineSources([]byte("deb file:/srv/debian bookworm main\ndeb file:/srv/debian-security bookworm-security main\n"), "l"))
		if err == nil || !strings.Contains(err.Error(), "not an http(s) URL") {
			t.Fatalf("err = %v", err)
		}
	})
}
