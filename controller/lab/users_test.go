package lab

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

func userTree(t *testing.T, sudo bool) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\nold:x:1000:1000::/home/old:/bin/sh\n",
		"etc/group":   "root:x:0:\nshadow:x:42:\nold:x:1000:\ntaken:x:1001:\n",
		"etc/shadow":  "root:!*:19000:0:99999:7:::\nold:!:19000:0:99999:7:::\n",
		"etc/gshadow": "root:*::\n",
	}
	if sudo {
		files["usr/bin/sudo"] = "#!/bin/true\n"
	}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "etc/shadow"), 0o640); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestWriteUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	root := userTree(t, true)
	_, k1, _ := GenerateHostKey()
	_, k2, _ := GenerateHostKey()
	users := []User{{Name: "kthw", AuthorizedKeys: ssh.MarshalAuthorizedKey(k1), Sudo: true}, {Name: "ops", AuthorizedKeys: ssh.MarshalAuthorizedKey(k2)}}
	if err := writeUsers(root, users); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// 1000 is a UID, 1001 a GID: the first free ID is 1002.
	for p, want := range map[string]string{
		"etc/passwd":  "kthw:x:1002:1002::/home/kthw:/bin/bash\nops:x:1003:1003::/home/ops:/bin/bash\n",
		"etc/group":   "kthw:x:1002:\nops:x:1003:\n",
		"etc/shadow":  "kthw:!:19000:0:99999:7:::\nops:!:19000:0:99999:7:::\n",
		"etc/gshadow": "kthw:!::\nops:!::\n",
	} {
		if got := read(p); !strings.HasSuffix(got, want) || strings.Count("\n"+got, "\nkthw:") != 1 {
			t.Errorf("%s:\n%s\nwant it to end in\n%s", p, got, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/shadow")); fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow mode %o", fi.Mode().Perm())
	}
	if got := read(sudoersFile); !strings.HasSuffix(got, "\nkthw ALL=(ALL) NOPASSWD:ALL\n") || strings.Contains(got, "ops") {
		t.Errorf("sudoers %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(root, sudoersFile)); fi.Mode().Perm() != 0o440 {
		t.Errorf("sudoers mode %o", fi.Mode().Perm())
	}
	for p, want := range map[string]os.FileMode{"home/kthw": 0o700, "home/kthw/.ssh": 0o700, "home/kthw/.ssh/authorized_keys": 0o600} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != want || st.Uid != 1002 || st.Gid != 1002 {
			t.Errorf("%s: mode %o owner %d:%d", p, fi.Mode().Perm(), st.Uid, st.Gid)
		}
	}
	if got := read("home/ops/.ssh/authorized_keys"); got != string(ssh.MarshalAuthorizedKey(k2)) {
		t.Errorf("ops keys %q", got)
	}

	// Again with other keys and kthw without sudo: same IDs, new keys, no sudo rules left.
	users[0].AuthorizedKeys, users[0].Sudo = ssh.MarshalAuthorizedKey(k2), false
	before := read("etc/passwd")
	if err := writeUsers(root, users); err != nil {
		t.Fatal(err)
	}
	if read("etc/passwd") != before {
		t.Errorf("passwd changed on a re-run:\n%s", read("etc/passwd"))
	}
	if got := read("home/kthw/.ssh/authorized_keys"); got != string(ssh.MarshalAuthorizedKey(k2)) {
		t.Errorf("kthw keys not replaced: %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, sudoersFile)); !os.IsNotExist(err) {
		t.Errorf("sudoers left: %v", err)
	}

	// sudo for a user needs sudo in the image.
	if err := writeUsers(userTree(t, false), []User{{Name: "kthw", AuthorizedKeys: ssh.MarshalAuthorizedKey(k1), Sudo: true}}); err == nil || !strings.Contains(err.Error(), "no sudo") {
		t.Errorf("without sudo: %v", err)
	}
}

func TestValidateUsers(t *testing.T) {
	_, k, _ := GenerateHostKey()
	key := ssh.MarshalAuthorizedKey(k)
	msgs := validateUsers([]User{
		{Name: "kthw", AuthorizedKeys: key},
		{Name: "root", AuthorizedKeys: key},
		{Name: "Bad", AuthorizedKeys: key},
		{Name: "kthw", AuthorizedKeys: key},
		{Name: "nokeys"},
		{Name: "badkeys", AuthorizedKeys: []byte("nope")},
	})
	got := strings.Join(msgs, "\n")
	for _, want := range []string{"users[1]: root", `users[2]: "Bad"`, "users[3]: kthw given twice", "users[4]: authorizedKeys empty", "users[5]: authorizedKeys:"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if len(msgs) != 5 {
		t.Errorf("%d messages:\n%s", len(msgs), got)
	}
}
