// Package aptrepo builds signed apt repositories for tests: packages made
// with dpkg-deb, indexes with apt-ftparchive, InRelease and Release.gpg
// signed with a throwaway GnuPG key, served over HTTP on an address the
// test owns (a lab bridge).
package aptrepo

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Repo is a flat apt repository (suite "/") built in the test with
// dpkg-deb and apt-ftparchive, signed with a test key (InRelease and
// Release.gpg), served over HTTP on the lab bridge.
type Repo struct {
	URL string
	Key []byte // the armored public key of the key that signed it
}

type GPG struct {
	env []string
	uid string
}

// NewGPG makes a throwaway GnuPG home with a signing key for uid.
func NewGPG(t testing.TB, uid string) *GPG {
	t.Helper()
	home, err := os.MkdirTemp("", "kthw-gnupg-") // gpg-agent's socket path is short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	g := &GPG{env: []string{"GNUPGHOME=" + home}, uid: uid}
	run(t, g.env, "", "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "rsa2048", "sign", "never")
	return g
}

// Public returns the armored public key.
func (g *GPG) Public(t testing.TB) []byte {
	return []byte(run(t, g.env, "", "gpg", "--armor", "--export", g.uid))
}

func run(t testing.TB, env []string, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if xe, ok := err.(*exec.ExitError); ok {
			stderr = xe.Stderr
		}
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// Debs are the packages of a repository: name -> versions.
type Debs map[string][]string

// Build builds the repository, signs it with g and serves it on
// addr (the lab bridge address).
func Build(t testing.TB, g *GPG, addr string, pkgs Debs) Repo {
	t.Helper()
	dir := t.TempDir()
	for name, versions := range pkgs {
		for _, v := range versions {
			root := filepath.Join(t.TempDir(), name)
			files := map[string]string{
				"DEBIAN/control":                 fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: kthw tests <test@kthw.invalid>\nDescription: kthw test package\n", name, v),
				"usr/share/" + name + "/version": v + "\n",
			}
			for p, content := range files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			run(t, nil, "", "dpkg-deb", "--root-owner-group", "--build", root, filepath.Join(dir, fmt.Sprintf("%s_%s_all.deb", name, v)))
		}
	}
	packages := run(t, nil, dir, "apt-ftparchive", "packages", ".")
	if err := os.WriteFile(filepath.Join(dir, "Packages"), []byte(packages), 0o644); err != nil {
		t.Fatal(err)
	}
	release := run(t, nil, dir, "apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=kthw-test", "release", ".")
	if err := os.WriteFile(filepath.Join(dir, "Release"), []byte(release), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, g.env, dir, "gpg", "--batch", "--yes", "--clearsign", "-o", "InRelease", "Release")
	run(t, g.env, dir, "gpg", "--batch", "--yes", "--armor", "--detach-sign", "-o", "Release.gpg", "Release")

	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return Repo{URL: "http://" + ln.Addr().String() + "/", Key: g.Public(t)}
}

// Skip skips the test unless gpg, dpkg-deb and apt-ftparchive exist.
func Skip(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"gpg", "dpkg-deb", "apt-ftparchive"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs gnupg and apt-utils)", tool)
		}
	}
}
