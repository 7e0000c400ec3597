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

// aptRoot makes a node root with an apt index directory whose mtime is
// age ago (relative to now).
func aptRoot(t *testing.T, now time.Time, age time.Duration, files ...string) string {
	t.Helper()
	root := t.TempDir()
	lists := filepath.Join(root, aptListsDir)
	if err := os.MkdirAll(lists, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(lists, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(lists, now.Add(-age), now.Add(-age)); err != nil {
		t.Fatal(err)
	}
	return root
}

var aptUpdate = []string{"apt-get", "update", "-q", "--error-on=any", "-o", "DPkg::Lock::Timeout=300"}

func TestAptRefresh(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const index = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
	tests := []struct {
		name    string
		age     time.Duration
		files   []string
		maxAge  time.Duration
		refresh bool
	}{
		{"fresh", 10 * time.Minute, []string{index}, time.Hour, false},
		{"old", 2 * time.Hour, []string{index}, time.Hour, true},
		{"no index files", time.Minute, []string{"lock"}, time.Hour, true},
		{"max age 0", time.Second, []string{index}, 0, true},
		{"from the future", -time.Hour, []string{index}, time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := aptRoot(t, now, tt.age, tt.files...)
			var script []call
			if tt.refresh {
				script = append(script, expect("", nil, aptUpdate...))
			}
			f := newFake(t, script...)
			m := newManager(t, APT, f, Options{Root: root, Now: func() time.Time { return now }})
			got, err := m.Refresh(ctx, tt.maxAge)
			if err != nil || got != tt.refresh {
				t.Fatalf("Refresh = %v, %v; want %v", got, err, tt.refresh)
			}
			if tt.refresh {
				if !slices.Contains(f.calls[0].env, "DEBIAN_FRONTEND=noninteractive") {
					t.Errorf("env = %q, want DEBIAN_FRONTEND=noninteractive", f.calls[0].env)
				}
				fi, err := os.Stat(filepath.Join(root, aptListsDir))
				if err != nil || !fi.ModTime().Equal(now) {
					t.Errorf("index mtime = %v, %v; want %v", fi.ModTime(), err, now)
				}
			}
		})
	}
}

func TestAptMarkStale(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	root := aptRoot(t, now, time.Minute, "x_Packages")
	f := newFake(t, expect("", nil, aptUpdate...))
	m := newManager(t, APT, f, Options{Root: root})
	if got, err := m.Refresh(ctx, time.Hour); err != nil || got {
		t.Fatalf("Refresh before = %v, %v; want fresh", got, err)
	}
	if err := m.(StaleMarker).MarkStale(); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Refresh(ctx, time.Hour); err != nil || !got {
		t.Fatalf("Refresh after MarkStale = %v, %v; want refreshed", got, err)
	}
	if got, err := m.Refresh(ctx, time.Hour); err != nil || got {
		t.Fatalf("Refresh again = %v, %v; want fresh", got, err)
	}
}

func TestAptRefreshError(t *testing.T) {
	root := aptRoot(t, time.Now(), 2*time.Hour)
	xe := &ExitError{Argv: aptUpdate, Code: 100, Stderr: "W: GPG error: http://127.0.0.1 ./ InRelease: The following signatures couldn't be verified\nE: The repository 'http://127.0.0.1 ./ InRelease' is not signed."}
	m := newManager(t, APT, newFake(t, expect("", xe, aptUpdate...)), Options{Root: root})
	_, err := m.Refresh(context.Background(), time.Hour)
	errContains(t, err, "refresh apt index: apt-get exited 100: W: GPG error", "is not signed")
	if !errors.As(err, &xe) {
		t.Errorf("err = %v, want an *ExitError inside", err)
	}
}

var dpkgQuery = []string{"dpkg-query", "-W", "-f=${Package}\\t${db:Status-Abbrev}\\t${Version}\\n", "--"}

func TestAptInstalled(t *testing.T) {
	names := []string{"jq", "dpkg", "nosuchpkg"}
	xe := &ExitError{Argv: dpkgQuery, Code: 1, Stderr: output(t, "dpkg-query.stderr")}
	m := newManager(t, APT, newFake(t, expect(output(t, "dpkg-query.txt"), xe, append(dpkgQuery, names...)...)), Options{})
	got, err := m.Installed(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"jq": "1.6-2.1+deb12u1", "dpkg": "1.21.22"}
	if len(got) != len(want) || got["jq"] != want["jq"] || got["dpkg"] != want["dpkg"] {
		t.Errorf("Installed = %v, want %v", got, want)
	}
}

func TestAptInstalledStatuses(t *testing.T) {
	out := "a\tii \t1.0\nb\trc \t2.0\nc\thi \t3.0\nd\tiU \t4.0\nunasked\tii \t5\n"
	names := []string{"a", "b", "c", "d"}
	got := parseDpkgQuery([]byte(out), names)
	if len(got) != 2 || got["a"] != "1.0" || got["c"] != "3.0" {
		t.Errorf("parseDpkgQuery = %v; want a (installed) and c (held, installed)", got)
	}
}

func TestAptInstalledError(t *testing.T) {
	xe := &ExitError{Code: 2, Stderr: "dpkg-query: error: parsing file '/var/lib/dpkg/status' near line 5"}
	m := newManager(t, APT, newFake(t, expect("", xe, append(dpkgQuery, "jq")...)), Options{})
	_, err := m.Installed(context.Background(), []string{"jq"})
	errContains(t, err, "query installed packages", "parsing file")
}

func TestAptResolve(t *testing.T) {
	madison := output(t, "apt-cache-madison-containerd.txt")
	for want, exp := range map[string]string{
		"":                     "1.6.20~ds1-1+deb12u3",
		"1.6.20":               "1.6.20~ds1-1+deb12u3",
		"v1.6.20":              "1.6.20~ds1-1+deb12u3",
		"1.6.20~ds1-1+deb12u2": "1.6.20~ds1-1+deb12u2",
		"1.6":                  "1.6.20~ds1-1+deb12u3",
	} {
		m := newManager(t, APT, newFake(t, expect(madison, nil, "apt-cache", "madison", "containerd")), Options{})
		got, err := m.Resolve(context.Background(), "containerd", want)
		if err != nil || got != exp {
			t.Errorf("Resolve(%q) = %q, %v; want %q", want, got, err, exp)
		}
	}
}

func TestAptResolveNotFound(t *testing.T) {
	m := newManager(t, APT, newFake(t,
		expect(output(t, "apt-cache-madison-jq.txt"), nil, "apt-cache", "madison", "jq"),
		expect("", nil, "apt-cache", "madison", "nosuch"),
	), Options{})
	_, err := m.Resolve(context.Background(), "jq", "1.7")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	errContains(t, err, "package jq version 1.7: not found; the repositories offer 1.6-2.1+deb12u3, 1.6-2.1+deb12u2")
	_, err = m.Resolve(context.Background(), "nosuch", "")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestParseMadisonSkipsSources(t *testing.T) {
	out := " foo | 1.0-1 | http://x bookworm/main amd64 Packages\n foo | 2.0-1 | http://x bookworm/main Sources\n foobar | 3.0 | http://x b/main amd64 Packages\n"
	if got := parseMadison([]byte(out), "foo"); !slices.Equal(got, []string{"1.0-1"}) {
		t.Errorf("parseMadison = %q", got)
	}
}

func TestAptInstall(t *testing.T) {
	f := newFake(t,
		expect("kubelet\n", nil, "apt-mark", "showhold", "--", "kubelet", "jq"),
		expect("", nil, "apt-mark", "unhold", "--", "kubelet"),
		expect("", nil, "apt-get", "install", "-y", "-q", "--allow-downgrades", "--allow-change-held-packages",
			"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
			"-o", "DPkg::Lock::Timeout=300", "--", "kubelet=1.31.2-1.1", "jq"),
		// apt drops the hold of a package it changes: hold it again.
		expect("", nil, "apt-mark", "hold", "--", "kubelet"),
	)
	m := newManager(t, APT, f, Options{})
	if err := m.Install(context.Background(), []Package{{"kubelet", "1.31.2-1.1"}, {"jq", ""}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.calls[2].env, "DEBIAN_FRONTEND=noninteractive") {
		t.Errorf("env = %q", f.calls[2].env)
	}
}

func TestAptInstallRefusesOptions(t *testing.T) {
	m := newManager(t, APT, newFake(t), Options{})
	for _, p := range []Package{{"-o", ""}, {"jq", "1=2"}, {"j q", ""}, {"", ""}, {"jq", "--force"}} {
		if err := m.Install(context.Background(), []Package{p}); err == nil {
			t.Errorf("Install(%+v) = nil, want an error", p)
		}
	}
}

func TestAptHeldAndHold(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, APT, newFake(t,
		expect("kubelet\nkubeadm:amd64\nother\n", nil, "apt-mark", "showhold", "--", "kubelet", "kubeadm", "kubectl"),
		expect("kubectl set on hold.\n", nil, "apt-mark", "hold", "--", "kubectl"),
		expect("Canceled hold on kubelet.\n", nil, "apt-mark", "unhold", "--", "kubelet"),
	), Options{})
	held, err := m.Held(ctx, []string{"kubelet", "kubeadm", "kubectl"})
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 || !held["kubelet"] || !held["kubeadm"] {
		t.Errorf("Held = %v", held)
	}
	if err := m.Hold(ctx, []string{"kubectl"}, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Hold(ctx, []string{"kubelet"}, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Hold(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
}

func TestAptRemove(t *testing.T) {
	m := newManager(t, APT, newFake(t,
		expect("jq\tii \t1.6\n", &ExitError{Code: 1, Stderr: "dpkg-query: no packages found matching gone"}, append(dpkgQuery, "jq", "gone")...),
		expect("jq\n", nil, "apt-mark", "showhold", "--", "jq"),
		expect("", nil, "apt-mark", "unhold", "--", "jq"),
		expect("", nil, "apt-get", "remove", "-y", "-q", "--allow-change-held-packages", "-o", "DPkg::Lock::Timeout=300", "--", "jq"),
	), Options{})
	if err := m.Remove(context.Background(), []string{"jq", "gone"}); err != nil {
		t.Fatal(err)
	}
}

func TestAptInstallRootUnsupported(t *testing.T) {
	_, err := New(APT, newFake(t), Options{InstallRoot: "/tmp/x"})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
}
