package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func testSpec(t *testing.T) (NodeSpec, ssh.PublicKey) {
	t.Helper()
	key, pub, err := GenerateHostKey()
	if err != nil {
		t.Fatal(err)
	}
	_, client, _ := GenerateHostKey()
	s := NodeSpec{
		Name: "n1", Address: netip.MustParsePrefix("10.200.0.11/24"), Gateway: netip.MustParseAddr("10.200.0.1"),
		HostKey: key, AuthorizedKeys: ssh.MarshalAuthorizedKey(client),
	}
	s.setDefaults()
	got, err := s.validate()
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Marshal()) != string(pub.Marshal()) {
		t.Fatal("validate returned another public key")
	}
	return s, pub
}

func TestNodeFiles(t *testing.T) {
	s, pub := testSpec(t)
	files := nodeFiles(s, pub, aptProxy{url: "http://10.200.0.1:3142", hosts: []string{"mirror.example", "security.example"}}, "/lab/nodes/n1")
	byPath := map[string]nodeFile{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	for p, want := range map[string]string{
		"/etc/hostname": "n1\n",
		"/etc/systemd/network/10-kthw-host0.network": "[Match]\nName=host0\n\n[Network]\nAddress=10.200.0.11/24\nGateway=10.200.0.1\n" +
			"LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
		"/etc/apt/apt.conf.d/00kthw-proxy": "// Written by kthw: the lab's apt proxy serves the host's Debian mirror only.\n" +
			"Acquire::http::Proxy::mirror.example \"http://10.200.0.1:3142\";\n" +
			"Acquire::http::Proxy::security.example \"http://10.200.0.1:3142\";\n",
		"/etc/ssh/sshd_config.d/00-kthw-hostkey.conf": "# Written by kthw: the controller pinned this key before the first connection.\nHostKey /etc/ssh/ssh_host_ed25519_key\n",
		"/etc/ssh/ssh_host_ed25519_key.pub":           string(ssh.MarshalAuthorizedKey(pub)),
		markerFile:                                    "/lab/nodes/n1\n",
	} {
		if got := byPath[p].Data; got != want {
			t.Errorf("%s:\n%q\nwant\n%q", p, got, want)
		}
	}
	if m := byPath["/root/.ssh/authorized_keys"].Mode; m != 0o600 {
		t.Errorf("authorized_keys mode %o", m)
	}
	if m := byPath["/etc/ssh/ssh_host_ed25519_key"].Mode; m != 0o600 {
		t.Errorf("host key mode %o", m)
	}
	if !strings.Contains(byPath["/etc/hosts"].Data, "10.200.0.11\tn1\n") {
		t.Errorf("hosts: %q", byPath["/etc/hosts"].Data)
	}

	root := t.TempDir()
	if err := writeNodeFiles(root, files); err != nil {
		t.Fatal(err)
	}
	// Rewriting (every start) works and keeps the modes.
	if err := writeNodeFiles(root, files); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{"root/.ssh": 0o700 | os.ModeDir, "root/.ssh/authorized_keys": 0o600, "etc/hostname": 0o644} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, mode)
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "etc/systemd/system/sysinit.target.wants/kthw-cgroup-rw.service")); err != nil || l != "/etc/systemd/system/kthw-cgroup-rw.service" {
		t.Errorf("unit link: %q %v", l, err)
	}
}

// A node that plants a symbolic link cannot make the host write outside the node's tree.
func TestWriteNodeFilesConfined(t *testing.T) {
	s, pub := testSpec(t)
	files := nodeFiles(s, pub, aptProxy{url: "http://10.200.0.1:3142", hosts: []string{"mirror.example"}}, "/x")
	outside := t.TempDir()
	for _, link := range []struct{ name, target string }{
		{"root/.ssh", outside},               // directory escape (absolute)
		{"root/.ssh", "../../../" + outside}, // directory escape (relative)
	} {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(link.name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(link.target, filepath.Join(root, link.name)); err != nil {
			t.Fatal(err)
		}
		if err := writeNodeFiles(root, files); err == nil {
			t.Errorf("link %s -> %s: no error", link.name, link.target)
		}
		if ents, _ := os.ReadDir(outside); len(ents) > 0 {
			t.Fatalf("link %s -> %s: wrote outside the tree: %v", link.name, link.target, ents)
		}
	}
	// A file replaced by a link is replaced, not followed.
	root := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	if err := os.Symlink(victim, filepath.Join(root, "etc/hostname")); err != nil {
		t.Fatal(err)
	}
	if err := writeNodeFiles(root, files); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(victim); string(data) != "keep" {
		t.Fatalf("wrote through a link: %q", data)
	}
}

func TestNodeSpecValidate(t *testing.T) {
	s := NodeSpec{Name: "Bad_Name", Address: netip.MustParsePrefix("10.200.0.0/24"), Gateway: netip.MustParseAddr("10.9.9.9"),
		HostKey: []byte("junk")}
	s.setDefaults()
	_, err := s.validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"name:", "hostname:", "address:", "gateway:", "hostKey:", "authorizedKeys: empty"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
