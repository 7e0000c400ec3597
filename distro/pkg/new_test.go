package pkg

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		bins []string
		want string
	}{
		{"debian", []string{"usr/bin/apt-get", "usr/bin/dpkg"}, APT},
		{"debian with dnf and zypper", []string{"usr/bin/apt-get", "usr/bin/dpkg", "usr/bin/dnf", "usr/bin/zypper", "usr/bin/rpm"}, APT},
		{"rocky", []string{"usr/bin/dnf", "usr/bin/rpm"}, DNF},
		{"opensuse", []string{"usr/bin/zypper", "usr/bin/rpm"}, Zypper},
		{"unmerged usr", []string{"usr/bin/apt-get", "bin/dpkg"}, APT},
		{"nothing", []string{"usr/bin/true"}, ""},
		{"rpm without a manager", []string{"usr/bin/rpm"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, b := range tt.bins {
				p := filepath.Join(root, b)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Detect(root)
			if tt.want == "" {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("Detect = %q, %v; want ErrUnsupported", got, err)
				}
				errContains(t, err, "none of apt, zypper, dnf found")
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Detect = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, name := range Names() {
		m := newManager(t, name, newFake(t), Options{})
		if m.Name() != name {
			t.Errorf("New(%q).Name() = %q", name, m.Name())
		}
		if _, ok := m.(StaleMarker); !ok {
			t.Errorf("%s is not a StaleMarker", name)
		}
	}
	_, err := New("pacman", newFake(t), Options{})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	errContains(t, err, `"pacman"`, "known: apt, zypper, dnf")
	if _, err := New(DNF, newFake(t), Options{InstallRoot: "relative"}); err == nil {
		t.Error("New with a relative install root: want an error")
	}
	if _, err := New(DNF, nil, Options{}); err == nil {
		t.Error("New without a runner: want an error")
	}
}

func TestExitError(t *testing.T) {
	e := &ExitError{Argv: []string{"apt-get", "update"}, Code: 100, Stderr: "W: one\nE: two\n"}
	if got, want := e.Error(), "apt-get exited 100: W: one; E: two"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
