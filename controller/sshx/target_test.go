package sshx

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestParseTarget(t *testing.T) {
	t.Setenv("USER", "alice")
	cases := []struct {
		in   string
		want Target
		str  string
	}{
		{"host", Target{"alice", "host", 22}, "alice@host:22"},
		{"bob@host", Target{"bob", "host", 22}, "bob@host:22"},
		{"bob@10.0.0.5:2222", Target{"bob", "10.0.0.5", 2222}, "bob@10.0.0.5:2222"},
		{"root@[fd00::5]:2200", Target{"root", "fd00::5", 2200}, "root@[fd00::5]:2200"},
		{"[fd00::5]", Target{"alice", "fd00::5", 22}, "alice@[fd00::5]:22"},
		{"fd00::5", Target{"alice", "fd00::5", 22}, "alice@[fd00::5]:22"},
		{"a@b@host", Target{"a@b", "host", 22}, "a@b@host:22"},
	}
	for _, c := range cases {
		got, err := ParseTarget(c.in)
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if got.String() != c.str {
			t.Errorf("ParseTarget(%q).String() = %q, want %q", c.in, got.String(), c.str)
		}
		if again, err := ParseTarget(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "@host", "user@", "host:0", "host:99999", "host:x", "[fd00::5", "[fd00::5]x", "ho st"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) succeeded", bad)
		}
	}
	t.Setenv("USER", "")
	if got, _ := ParseTarget("host"); got.User != "root" {
		t.Errorf("default user without $USER = %q, want root", got.User)
	}
}

func TestQuote(t *testing.T) {
	cases := map[string]string{
		"":                  "''",
		"/var/lib/kthw":     "/var/lib/kthw",
		"a b":               "'a b'",
		"it's":              `'it'\''s'`,
		"$(rm -rf /)":       "'$(rm -rf /)'",
		"x;y":               "'x;y'",
		"KEY=value,a:b@c%d": "KEY=value,a:b@c%d",
		"*":                 "'*'",
		"~root":             "'~root'",
	}
	for in, want := range cases {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := Command("printf", "%s\n", "a'b"); got != `printf '%s
' 'a'\''b'` {
		t.Errorf("Command = %s", got)
	}
}

func TestIsSudoPasswordRequired(t *testing.T) {
	yes := []string{
		"sudo: a password is required\n",
		"sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\n",
		"sudo: no tty present and no askpass program specified\n",
	}
	for _, s := range yes {
		if !IsSudoPasswordRequired(s) {
			t.Errorf("IsSudoPasswordRequired(%q) = false", s)
		}
	}
	for _, s := range []string{"", "ls: cannot access 'x': No such file or directory", "sudo: unable to resolve host x"} {
		if IsSudoPasswordRequired(s) {
			t.Errorf("IsSudoPasswordRequired(%q) = true", s)
		}
	}
	if SudoPrefix("root") != "" || SudoPrefix("bob") != "sudo -n " {
		t.Error("SudoPrefix")
	}
	e := &RemoteError{Host: "h:22", User: "bob", ExitCode: 1, Stderr: "sudo: a password is required\n"}
	if !strings.HasPrefix(e.Error(), "sudo on h:22 needs a password for bob;") {
		t.Errorf("Error() = %q", e.Error())
	}
}

func TestAlgorithmsForKeyType(t *testing.T) {
	got := strings.Join(algorithmsForKeyType("ssh-rsa"), ",")
	if got != "rsa-sha2-512,rsa-sha2-256,ssh-rsa" {
		t.Errorf("rsa: %s", got)
	}
	if got := algorithmsForKeyType("ssh-ed25519"); len(got) != 1 || got[0] != "ssh-ed25519" {
		t.Errorf("ed25519: %v", got)
	}
}

func TestDefaultOptions(t *testing.T) {
	home := t.TempDir()
	env := map[string]string{"HOME": home}
	getenv := func(k string) string { return env[k] }

	var o Options
	if err := DefaultOptions(&o, getenv); err == nil || !strings.Contains(err.Error(), "no SSH identity") {
		t.Fatalf("no keys, no agent: err = %v", err)
	}

	writeTestKey(t, filepath.Join(home, ".ssh", "id_ed25519"), "")
	writeTestKey(t, filepath.Join(home, ".ssh", "id_rsa"), "secret") // encrypted: agent only
	o = Options{}
	if err := DefaultOptions(&o, getenv); err != nil {
		t.Fatal(err)
	}
	want := Options{
		IdentityFiles:  []string{filepath.Join(home, ".ssh", "id_ed25519")},
		KnownHostsFile: filepath.Join(home, ".ssh", "known_hosts"),
		KeepAlive:      DefaultKeepAlive,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("defaults = %+v, want %+v", o, want)
	}

	env["SSH_AUTH_SOCK"] = "/run/agent.sock"
	o = Options{IdentityFiles: []string{"/given"}, KnownHostsFile: "/kh", KeepAlive: time.Second}
	if err := DefaultOptions(&o, getenv); err != nil {
		t.Fatal(err)
	}
	want = Options{IdentityFiles: []string{"/given"}, KnownHostsFile: "/kh", KeepAlive: time.Second, UseAgent: true}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("given = %+v, want %+v", o, want)
	}

	delete(env, "HOME")
	if err := DefaultOptions(&Options{}, getenv); err == nil {
		t.Error("no HOME and no --known-hosts accepted")
	}
}

func writeTestKey(t *testing.T, path, passphrase string) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}
