package facts

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kthw/kthw/agent/internal/systemdtest"
)

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{
			name: "debian",
			in: `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION_CODENAME=bookworm
ID=debian
`,
			want: map[string]string{
				"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "NAME": "Debian GNU/Linux",
				"VERSION_ID": "12", "VERSION_CODENAME": "bookworm", "ID": "debian",
			},
		},
		{
			name: "quotes, escapes, comments and junk",
			in: `# a comment

ID='opensuse-leap'
ID_LIKE="suse opensuse"
PRETTY_NAME="say \"hi\" \$HOME \\ \n"
EMPTY=
junk line
=novalue
  VERSION_ID = "15.6"
ONEQUOTE="
`,
			want: map[string]string{
				"ID": "opensuse-leap", "ID_LIKE": "suse opensuse",
				"PRETTY_NAME": `say "hi" $HOME \ \n`, "EMPTY": "",
				"VERSION_ID": "15.6", "ONEQUOTE": `"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOSRelease(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseOSRelease =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr string
	}{
		{"kB", "MemTotal:       16316412 kB\nMemFree:  1 kB\n", 16316412 * 1024, ""},
		{"not first", "Foo: 1 kB\nMemTotal: 2048 kB\n", 2048 * 1024, ""},
		{"no unit", "MemTotal: 4096\n", 4096, ""},
		{"missing", "MemFree: 1 kB\n", 0, "no MemTotal"},
		{"bad number", "MemTotal: lots kB\n", 0, "parse MemTotal"},
		{"bad unit", "MemTotal: 1 MB\n", 0, "unknown unit"},
		{"empty", "MemTotal:\n", 0, "no value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMemTotal(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseMemTotal: err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMemTotal = %d, %v, want %d", got, err, tt.want)
			}
		})
	}
}

// writeRoot creates files (path -> content) under a temporary root.
func writeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestGather(t *testing.T) {
	root := writeRoot(t, map[string]string{
		"/usr/lib/os-release": "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\nPRETTY_NAME=\"Rocky Linux 9.4\"\n",
		"/proc/meminfo":       "MemTotal: 1024 kB\n",
		"/proc/1/comm":        "bash\n",
		"/usr/bin/yum":        "#!/bin/sh\n",
		"/usr/bin/dnf":        "#!/bin/sh\n",
		"/usr/bin/rpm":        "#!/bin/sh\n",
	})
	f, err := Gather(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	rel := f.GetOs()
	if rel.GetId() != "rocky" || rel.GetVersionId() != "9.4" || rel.GetPrettyName() != "Rocky Linux 9.4" ||
		!reflect.DeepEqual(rel.GetIdLike(), []string{"rhel", "centos", "fedora"}) {
		t.Errorf("os = %v", rel)
	}
	if f.GetMemoryBytes() != 1024*1024 {
		t.Errorf("memory = %d", f.GetMemoryBytes())
	}
	if f.GetPackageManager() != "dnf" {
		t.Errorf("package manager = %q, want dnf (yum is no backend)", f.GetPackageManager())
	}
	if f.GetInitSystem() != "bash" || f.GetSystemdUsable() ||
		f.GetSystemdDetail() != "systemd is not running (PID 1 is bash)" {
		t.Errorf("init = %q usable = %v detail = %q", f.GetInitSystem(), f.GetSystemdUsable(), f.GetSystemdDetail())
	}
	if f.GetKernel() == "" || f.GetArch() == "" || f.GetHostname() == "" || f.GetCpus() < 1 {
		t.Errorf("uname facts missing: %v", f)
	}
	for _, a := range f.GetAddresses() {
		if a.GetInterface() == "lo" || !strings.Contains(a.GetCidr(), "/") {
			t.Errorf("address %v", a)
		}
	}
}

func TestGatherEtcOSReleaseWins(t *testing.T) {
	root := writeRoot(t, map[string]string{
		"/etc/os-release":     "ID=debian\nVERSION_CODENAME=bookworm\n",
		"/usr/lib/os-release": "ID=other\n",
		"/proc/meminfo":       "MemTotal: 1 kB\n",
		"/bin/apt-get":        "",
		"/bin/dpkg":           "",
	})
	f, err := Gather(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if f.GetOs().GetId() != "debian" || f.GetOs().GetVersionCodename() != "bookworm" || f.GetPackageManager() != "apt" {
		t.Errorf("facts = %v", f)
	}
	if f.GetSystemdDetail() != "systemd is not running (PID 1 is unknown)" {
		t.Errorf("detail = %q", f.GetSystemdDetail())
	}
}

func TestPackageManagerNone(t *testing.T) {
	root := writeRoot(t, map[string]string{"/usr/bin/zypper": ""})
	if err := os.Chmod(filepath.Join(root, "/usr/bin/zypper"), 0o644); err != nil {
		t.Fatal(err)
	}
	if pm := packageManager(root); pm != "" {
		t.Errorf("packageManager = %q for a non-executable file", pm)
	}
}

// The fact names the backend the packages module would detect, no other.
func TestPackageManagerIsTheDetectedBackend(t *testing.T) {
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"apt-get without dpkg", []string{"/usr/bin/apt-get"}, ""},
		{"yum only", []string{"/usr/bin/yum", "/usr/bin/rpm"}, ""},
		{"zypper and dnf", []string{"/usr/bin/dnf", "/usr/bin/zypper", "/usr/bin/rpm"}, "zypper"},
		{"apt beside dnf", []string{"/usr/bin/dnf", "/usr/bin/rpm", "/usr/bin/apt-get", "/usr/bin/dpkg"}, "apt"},
	} {
		files := map[string]string{}
		for _, f := range c.files {
			files[f] = "#!/bin/sh\n"
		}
		if pm := packageManager(writeRoot(t, files)); pm != c.want {
			t.Errorf("%s: packageManager = %q, want %q", c.name, pm, c.want)
		}
	}
}

// TestGatherSystemdMarker runs the D-Bus probe: on a host without systemd it
// must fail softly and say why; on a host with it, systemd is usable.
func TestGatherSystemdMarker(t *testing.T) {
	root := writeRoot(t, map[string]string{"/proc/meminfo": "MemTotal: 1 kB\n", "/proc/1/comm": "systemd\n"})
	if err := os.MkdirAll(filepath.Join(root, "/run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := Gather(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if f.GetSystemdUsable() != (f.GetSystemdDetail() == "") {
		t.Errorf("usable = %v with detail %q", f.GetSystemdUsable(), f.GetSystemdDetail())
	}
	if !f.GetSystemdUsable() && !strings.Contains(f.GetSystemdDetail(), "systemd over D-Bus") {
		t.Errorf("detail = %q, want the D-Bus failure", f.GetSystemdDetail())
	}
	t.Logf("usable = %v, detail = %q", f.GetSystemdUsable(), f.GetSystemdDetail())
}

func TestGatherSystemdUsable(t *testing.T) {
	systemdtest.Start(t, nil)
	root := writeRoot(t, map[string]string{"/proc/meminfo": "MemTotal: 1 kB\n", "/proc/1/comm": "systemd\n"})
	if err := os.MkdirAll(filepath.Join(root, "/run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := Gather(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if !f.GetSystemdUsable() || f.GetSystemdDetail() != "" || f.GetInitSystem() != "systemd" {
		t.Errorf("usable = %v, detail = %q, init = %q", f.GetSystemdUsable(), f.GetSystemdDetail(), f.GetInitSystem())
	}
}
