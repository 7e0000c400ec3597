package lab

import (
	"io/fs"
	"reflect"
	"strings"
	"testing"

	"github.com/kthw/kthw/images"
)

func mustRecipe(t *testing.T) *Recipe {
	t.Helper()
	sub, err := fs.Sub(images.Lab, "lab")
	if err != nil {
		t.Fatal(err)
	}
	r, err := LoadRecipe(sub, DefaultRecipe)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Every embedded recipe parses, validates and is named after its file.
func TestEmbeddedRecipes(t *testing.T) {
	sub, _ := fs.Sub(images.Lab, "lab")
	names, err := fs.Glob(sub, "*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("no recipes: %v", err)
	}
	for _, n := range names {
		if _, err := LoadRecipe(sub, strings.TrimSuffix(n, ".yaml")); err != nil {
			t.Error(err)
		}
	}
	r := mustRecipe(t)
	for _, p := range []string{"systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "ca-certificates"} {
		if !contains(r.Include, p) {
			t.Errorf("include lacks %s", p)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestRecipeHash(t *testing.T) {
	r := mustRecipe(t)
	archives := []ResolvedArchive{
		{Name: "mirror", URI: "http://deb.debian.org/debian", Suites: []string{"bookworm"}, Components: []string{"main"}},
		{Name: "security", URI: "http://deb.debian.org/debian-security", Suites: []string{"bookworm-security"}, Components: []string{"main"}},
	}
	h := r.Hash(archives)
	if len(h) != 16 || strings.Trim(h, "0123456789abcdef") != "" {
		t.Fatalf("hash %q: want 16 hex digits", h)
	}
	if again := mustRecipe(t).Hash(archives); again != h {
		t.Fatalf("not stable: %s then %s", h, again)
	}
	other := append([]ResolvedArchive(nil), archives...)
	other[0].URI = "http://mirror.example/debian"
	if r.Hash(other) == h {
		t.Fatal("mirror URI change kept the hash")
	}
	changed, err := ParseRecipe(append(append([]byte(nil), r.raw...), "\n# a comment\n"...))
	if err != nil {
		t.Fatal(err)
	}
	if changed.Hash(archives) == h {
		t.Fatal("recipe content change kept the hash")
	}
}

func TestRecipeValidate(t *testing.T) {
	_, err := ParseRecipe([]byte(`name: Bad_Name
suite: bookworm
variant: minbase
components: []
archives:
  - name: mirror
    match: {suite: bookworm, pathSuffix: debian}
    suites: [bookworm]
include: ["bad pkg"]
post:
  - remove: ["relative/*"]
  - enable: [not-a-unit]
  - {}
proxy:
  backends: {backends_debian: nosuch}
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"recipe.name", "recipe.components", "pathSuffix", "include[0]", "post[0].remove[0]",
		"post[1].unit[0]", "post[2]: exactly one", "unknown archive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := ParseRecipe([]byte("name: x\nsurprise: 1\n")); err == nil || !strings.Contains(err.Error(), "surprise") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestMmdebstrapArgs(t *testing.T) {
	r, err := ParseRecipe([]byte(`name: test-recipe
suite: bookworm
variant: minbase
components: [main, contrib]
archives:
  - name: mirror
    match: {suite: bookworm}
    suites: [bookworm, bookworm-updates]
  - name: security
    match: {suite: bookworm-security}
    suites: [bookworm-security]
include: [systemd, openssh-server]
post:
  - remove: ["/etc/ssh/ssh_host_*", /etc/hostname]
  - enable: [systemd-networkd.service]
  - run: [sh, -c, "echo it's > /x"]
  - mask: [a.service, b.mount]
`))
	if err != nil {
		t.Fatal(err)
	}
	archives := []ResolvedArchive{
		{Name: "mirror", URI: "http://m.example/debian", Suites: []string{"bookworm", "bookworm-updates"}, Components: r.Components},
		{Name: "security", URI: "http://m.example/debian-security", Suites: []string{"bookworm-security"}, Components: r.Components},
	}
	got := mmdebstrapArgs(r, archives, "/cache/.tmp-x")
	want := []string{
		"--mode=root", "--format=directory", "--variant=minbase", "--components=main,contrib",
		"--include=systemd,openssh-server",
		`--customize-hook=rm -rf -- "$1"/etc/ssh/ssh_host_* "$1"/etc/hostname`,
		`--customize-hook=chroot "$1" systemctl enable 'systemd-networkd.service'`,
		`--customize-hook=chroot "$1" 'sh' '-c' 'echo it'\''s > /x'`,
		`--customize-hook=chroot "$1" systemctl mask 'a.service' 'b.mount'`,
		"bookworm", "/cache/.tmp-x",
		"deb http://m.example/debian bookworm main contrib",
		"deb http://m.example/debian bookworm-updates main contrib",
		"deb http://m.example/debian-security bookworm-security main contrib",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}
