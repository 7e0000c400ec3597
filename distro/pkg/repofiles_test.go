package pkg

import (
	"fmt"
	"strings"
	"testing"
)

// renderFiles lays the files out for a golden file.
func renderFiles(files []File) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "=== %s (%04o)\n%s", f.Path, f.Mode, f.Content)
	}
	return b.String()
}

func TestRepoFiles(t *testing.T) {
	key := testKey(t)
	repos := map[string]Repo{
		"kubernetes": {Name: "kubernetes", Description: "Kubernetes v1.31", URI: "https://pkgs.k8s.io/core:/stable:/v1.31/deb/", Suite: "/", Key: key},
		"docker":     {Name: "docker", URI: "https://download.docker.com/linux/debian", Suite: "bookworm", Components: []string{"stable"}, Key: key},
	}
	rpmURIs := map[string]string{
		"kubernetes": "https://pkgs.k8s.io/core:/stable:/v1.31/rpm/",
		"docker":     "https://download.docker.com/linux/centos/9/$basearch/stable",
	}
	for _, mgr := range Names() {
		for _, name := range []string{"kubernetes", "docker"} {
			t.Run(mgr+"-"+name, func(t *testing.T) {
				repo := repos[name]
				if mgr != APT {
					repo.URI = rpmURIs[name]
				}
				m := newManager(t, mgr, newFake(t), Options{})
				files, err := m.RepoFiles(repo)
				if err != nil {
					t.Fatal(err)
				}
				paths := m.RepoPaths(name)
				for _, f := range files {
					if !contains(paths, f.Path) {
						t.Errorf("RepoFiles wrote %s, RepoPaths lists %q", f.Path, paths)
					}
				}
				if len(files) != len(paths) {
					t.Errorf("RepoFiles wrote %d files, RepoPaths lists %d", len(files), len(paths))
				}
				golden(t, renderFiles(files))
			})
		}
	}
}

func TestRepoFilesInstallRoot(t *testing.T) {
	m := newManager(t, DNF, newFake(t), Options{InstallRoot: "/tmp/root"})
	files, err := m.RepoFiles(Repo{Name: "test", URI: "http://127.0.0.1:8080/", Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(files[1].Content), "gpgkey=file:///tmp/root/etc/pki/rpm-gpg/RPM-GPG-KEY-test\n") {
		t.Errorf("repo file does not name the key under the install root:\n%s", files[1].Content)
	}
}

func TestRepoFilesInvalid(t *testing.T) {
	key := testKey(t)
	good := Repo{Name: "k", URI: "https://x/", Suite: "/", Key: key}
	tests := []struct {
		name  string
		mgrs  []string
		edit  func(*Repo)
		error string
	}{
		{"name", Names(), func(r *Repo) { r.Name = "../etc" }, "must be lowercase letters"},
		{"upper name", Names(), func(r *Repo) { r.Name = "Kube" }, "must be lowercase letters"},
		{"no uri", Names(), func(r *Repo) { r.URI = "" }, "uri is empty"},
		{"bad uri", Names(), func(r *Repo) { r.URI = "pkgs.k8s.io" }, "is not a URL"},
		{"no key", Names(), func(r *Repo) { r.Key = nil }, "key is empty"},
		{"binary key", Names(), func(r *Repo) { r.Key = []byte{0x99, 1, 2} }, "not an ASCII-armored public key block"},
		{"two-line description", Names(), func(r *Repo) { r.Description = "a\nb" }, "one line"},
		{"no suite", []string{APT}, func(r *Repo) { r.Suite = "" }, "suite is empty"},
		{"flat with components", []string{APT}, func(r *Repo) { r.Components = []string{"main"} }, "has no components"},
		{"suite without components", []string{APT}, func(r *Repo) { r.Suite = "bookworm" }, "needs components"},
	}
	for _, tt := range tests {
		for _, mgr := range tt.mgrs {
			t.Run(tt.name+"/"+mgr, func(t *testing.T) {
				r := good
				tt.edit(&r)
				_, err := newManager(t, mgr, newFake(t), Options{}).RepoFiles(r)
				errContains(t, err, tt.error)
			})
		}
	}
}

func TestRepoFilesAllErrors(t *testing.T) {
	_, err := newManager(t, DNF, newFake(t), Options{}).RepoFiles(Repo{Name: "X"})
	errContains(t, err, "must be lowercase", "uri is empty", "key is empty")
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
