package pkg

import (
	"context"
	"errors"
	"testing"
)

var zypperSearchArgv = []string{"zypper", "--non-interactive", "--xmlout", "--no-refresh", "search", "-s", "--match-exact", "-t", "package", "--"}

func TestZypperResolve(t *testing.T) {
	for want, exp := range map[string]string{"": "1.31.2-1", "1.30.1": "1.30.1-1", "v1.31.2": "1.31.2-1"} {
		m := newManager(t, Zypper, newFake(t, expect(output(t, "zypper-search.xml"), nil, append(zypperSearchArgv, "kthw-hello")...)), Options{})
		got, err := m.Resolve(context.Background(), "kthw-hello", want)
		if err != nil || got != exp {
			t.Errorf("Resolve(%q) = %q, %v; want %q", want, got, err, exp)
		}
	}
}

func TestZypperResolveNotFound(t *testing.T) {
	m := newManager(t, Zypper, newFake(t,
		expect(output(t, "zypper-search-none.xml"), &ExitError{Code: 104}, append(zypperSearchArgv, "nosuch")...),
		expect(output(t, "zypper-search.xml"), nil, append(zypperSearchArgv, "kthw-hello")...),
	), Options{})
	_, err := m.Resolve(context.Background(), "nosuch", "1.0")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	_, err = m.Resolve(context.Background(), "kthw-hello", "2.0")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	errContains(t, err, "offer 1.31.2-1, 1.30.1-1")
}

func TestParseZypperSearchSkipsSystem(t *testing.T) {
	out := `<?xml version='1.0'?><stream><search-result version="0.0"><solvable-list>
<solvable status="installed" name="a" kind="package" edition="1.0-1" arch="noarch" repository="(System Packages)"/>
<solvable status="installed" name="a" kind="package" edition="1.0-2" arch="noarch" repository="repo"/>
<solvable status="not-installed" name="a" kind="srcpackage" edition="3.0-1" arch="noarch" repository="repo"/>
</solvable-list></search-result></stream>`
	vs, err := parseZypperSearch([]byte(out), "a")
	if err != nil || len(vs) != 1 || vs[0] != "1.0-2" {
		t.Errorf("parseZypperSearch = %q, %v", vs, err)
	}
}

func TestZypperHeld(t *testing.T) {
	m := newManager(t, Zypper, newFake(t,
		expect(output(t, "zypper-locks.xml"), nil, "zypper", "--non-interactive", "--xmlout", "locks"),
	), Options{})
	held, err := m.Held(context.Background(), []string{"kthw-hello", "other"})
	if err != nil || len(held) != 1 || !held["kthw-hello"] {
		t.Errorf("Held = %v, %v", held, err)
	}
}

func TestZypperInstall(t *testing.T) {
	m := newManager(t, Zypper, newFake(t,
		expect(output(t, "zypper-locks.xml"), nil, "zypper", "--non-interactive", "--root", "/r", "--xmlout", "locks"),
		expect("", nil, "zypper", "--non-interactive", "--root", "/r", "removelock", "--", "kthw-hello"),
		// 102: done, a reboot is suggested.
		expect("", &ExitError{Code: 102}, "zypper", "--non-interactive", "--root", "/r", "install", "--oldpackage", "--auto-agree-with-licenses", "--", "kthw-hello=1.30.1-1"),
		expect("", nil, "zypper", "--non-interactive", "--root", "/r", "addlock", "--", "kthw-hello"),
	), Options{InstallRoot: "/r"})
	if err := m.Install(context.Background(), []Package{{"kthw-hello", "1.30.1-1"}}); err != nil {
		t.Fatal(err)
	}
}

func TestZypperInstallNotFound(t *testing.T) {
	m := newManager(t, Zypper, newFake(t,
		expect(`<stream><locks size="0"></locks></stream>`, nil, "zypper", "--non-interactive", "--xmlout", "locks"),
		expect("", &ExitError{Code: 104, Stderr: "'nosuch' not found in package names. Trying capabilities."}, "zypper", "--non-interactive", "install", "--oldpackage", "--auto-agree-with-licenses", "--", "nosuch"),
	), Options{})
	err := m.Install(context.Background(), []Package{{"nosuch", ""}})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}
