package pkg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var rpmQuery = []string{"rpm", "-q", "--qf", `%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n`, "--"}

func TestDnfInstalled(t *testing.T) {
	names := []string{"kthw-hello", "nosuch"}
	m := newManager(t, DNF, newFake(t,
		expect(output(t, "rpm-q.txt"), &ExitError{Code: 1}, append(rpmQuery, names...)...),
	), Options{})
	got, err := m.Installed(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["kthw-hello"] != "1.30.1-1" {
		t.Errorf("Installed = %v", got)
	}
}

func TestRPMInstalledEpochAndArches(t *testing.T) {
	out := "a\t2\t1.0\t1\tx86_64\nb\t(none)\t1.0\t1.el9\tx86_64\nb\t(none)\t1.1\t1.el9\ti686\npackage c is not installed\n"
	got, missing := parseRPMQuery([]byte(out), []string{"a", "b", "c"})
	if missing != 1 || len(got) != 2 || got["a"] != "2:1.0-1" || got["b"] != "1.1-1.el9" {
		t.Errorf("parseRPMQuery = %v, %d", got, missing)
	}
}

func TestDnfInstalledError(t *testing.T) {
	// Exit code 2 for one missing name: something else went wrong.
	m := newManager(t, DNF, newFake(t,
		expect("package nosuch is not installed\n", &ExitError{Code: 2, Stderr: "error: rpmdb open failed"}, append(rpmQuery, "nosuch")...),
	), Options{})
	_, err := m.Installed(context.Background(), []string{"nosuch"})
	errContains(t, err, "rpmdb open failed")
}

var dnfRepoquery = []string{"dnf", "-y", "-q", "--disableplugin=versionlock", "repoquery", "--available", "--showduplicates",
	"--qf", `%{name}\t%{epoch}\t%{version}\t%{release}\t%{arch}`, "--"}

func TestDnfResolve(t *testing.T) {
	for want, exp := range map[string]string{"": "1.31.2-1", "1.30.1": "1.30.1-1", "v1.31": "1.31.2-1", "1.30.1-1": "1.30.1-1"} {
		m := newManager(t, DNF, newFake(t, expect(output(t, "dnf-repoquery.txt"), nil, append(dnfRepoquery, "kthw-hello")...)), Options{})
		got, err := m.Resolve(context.Background(), "kthw-hello", want)
		if err != nil || got != exp {
			t.Errorf("Resolve(%q) = %q, %v; want %q", want, got, err, exp)
		}
	}
	m := newManager(t, DNF, newFake(t, expect(output(t, "dnf-repoquery.txt"), nil, append(dnfRepoquery, "kthw-hello")...)), Options{})
	_, err := m.Resolve(context.Background(), "kthw-hello", "1.29.0")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	errContains(t, err, "offer 1.31.2-1, 1.30.1-1")
}

func TestDnfInstallRoot(t *testing.T) {
	m := newManager(t, DNF, newFake(t,
		expect("", nil, "rpm", "--root", "/srv/root", "-q", "--qf", `%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n`, "--", "a"),
		expect("", nil, "dnf", "-y", "--installroot=/srv/root", "-q", "versionlock", "list"),
	), Options{InstallRoot: "/srv/root"})
	if _, err := m.Installed(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Held(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
}

func TestDnfInstallUnlocksHeld(t *testing.T) {
	m := newManager(t, DNF, newFake(t,
		expect(output(t, "dnf-versionlock-list.txt"), nil, "dnf", "-y", "-q", "versionlock", "list"),
		expect("", nil, "dnf", "-y", "versionlock", "delete", "--", "kthw-hello"),
		expect("", nil, "dnf", "-y", "install", "--", "kthw-hello-1.31.2-1", "other"),
		expect("", nil, "dnf", "-y", "versionlock", "add", "--", "kthw-hello"),
	), Options{})
	if err := m.Install(context.Background(), []Package{{"kthw-hello", "1.31.2-1"}, {"other", ""}}); err != nil {
		t.Fatal(err)
	}
}

func TestDnfInstallNotFoundRelocks(t *testing.T) {
	xe := &ExitError{Code: 1, Stderr: "Error: Unable to find a match: kthw-hello-9.9-1"}
	m := newManager(t, DNF, newFake(t,
		expect("kthw-hello-0:1.30.1-1.*\n", nil, "dnf", "-y", "-q", "versionlock", "list"),
		expect("", nil, "dnf", "-y", "versionlock", "delete", "--", "kthw-hello"),
		expect("", xe, "dnf", "-y", "install", "--", "kthw-hello-9.9-1"),
		expect("", nil, "dnf", "-y", "versionlock", "add", "--", "kthw-hello"),
	), Options{})
	err := m.Install(context.Background(), []Package{{"kthw-hello", "9.9-1"}})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestParseVersionlockList(t *testing.T) {
	got := parseVersionlockList([]byte(output(t, "dnf-versionlock-list.txt") + "\n# comment\nkube-rs-proxy-1:2.0-3.el9.x86_64\n"))
	if want := []string{"kthw-hello", "kube-rs-proxy"}; !slices.Equal(got, want) {
		t.Errorf("parseVersionlockList = %q, want %q", got, want)
	}
}

func TestDnfVersionlockMissing(t *testing.T) {
	xe := &ExitError{Code: 1, Stderr: output(t, "dnf-no-such-command.stderr")}
	m := newManager(t, DNF, newFake(t, expect("", xe, "dnf", "-y", "versionlock", "add", "--", "kubelet")), Options{})
	err := m.Hold(context.Background(), []string{"kubelet"}, true)
	errContains(t, err, "python3-dnf-plugin-versionlock")
}

func TestDnfRefresh(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	m := newManager(t, DNF, newFake(t,
		expect("", nil, "dnf", "-y", "makecache", "--refresh"),
		expect("", nil, "dnf", "-y", "makecache", "--refresh"),
	), Options{Root: root, Now: clock})
	for i, want := range []bool{true, false} {
		if got, err := m.Refresh(ctx, time.Hour); err != nil || got != want {
			t.Fatalf("Refresh #%d = %v, %v; want %v", i, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, dnfStamp)); err != nil {
		t.Errorf("stamp: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if got, err := m.Refresh(ctx, time.Hour); err != nil || !got {
		t.Fatalf("Refresh after 2h = %v, %v; want refreshed", got, err)
	}
	if err := m.(StaleMarker).MarkStale(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, dnfStamp)); !os.IsNotExist(err) {
		t.Errorf("stamp after MarkStale: %v", err)
	}
}

func TestRPMKeys(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	keyFile := filepath.Join(root, "/etc/pki/rpm-gpg/RPM-GPG-KEY-kubernetes")
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, testKey(t), 0o644); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, Zypper, newFake(t,
		expect("package gpg-pubkey-318bb87d-6b0816f6 is not installed\n", &ExitError{Code: 1}, "rpm", "-q", "--", "gpg-pubkey-318bb87d-6b0816f6"),
		expect("", nil, "rpm", "--import", keyFile),
		expect("gpg-pubkey-318bb87d-6b0816f6\n", nil, "rpm", "-q", "--", "gpg-pubkey-318bb87d-6b0816f6"),
	), Options{Root: root})
	ki := m.(KeyImporter)
	if ok, err := ki.KeyTrusted(ctx, testKey(t)); err != nil || ok {
		t.Fatalf("KeyTrusted before = %v, %v", ok, err)
	}
	if err := ki.ImportKey(ctx, "kubernetes"); err != nil {
		t.Fatal(err)
	}
	if ok, err := ki.KeyTrusted(ctx, testKey(t)); err != nil || !ok {
		t.Fatalf("KeyTrusted after = %v, %v", ok, err)
	}
	errContains(t, ki.ImportKey(ctx, "missing"), "import key of repository missing")
}

func TestDnfHeldWithoutPlugin(t *testing.T) {
	xe := &ExitError{Code: 1, Stderr: output(t, "dnf-no-such-command.stderr")}
	m := newManager(t, DNF, newFake(t, expect("", xe, "dnf", "-y", "-q", "versionlock", "list")), Options{})
	held, err := m.Held(context.Background(), []string{"kubelet"})
	if err != nil || len(held) != 0 {
		t.Fatalf("Held = %v, %v; want nothing held", held, err)
	}
}
