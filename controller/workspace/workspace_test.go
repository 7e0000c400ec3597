package workspace

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kthw/kthw/controller/state"
)

func newKey(t *testing.T) (string, ssh.PublicKey) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return string(ssh.MarshalAuthorizedKey(k)), k
}

func TestOpenKeyAndLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws")
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	st, err := os.Stat(w.KeyPath())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key: %v %v", st.Mode(), err)
	}
	if _, err := Open(dir); !errors.Is(err, state.ErrInUse) {
		t.Fatalf("second open: %v", err)
	}
	w.Close()
	w2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if string(w2.PublicKey) != string(w.PublicKey) {
		t.Fatalf("key changed across opens")
	}
}

// Nodes are pinned in parallel: no pin may be lost, and a re-pin replaces
// the old key of that host only.
func TestPinHostKeyParallel(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "ws"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	keys := make([]ssh.PublicKey, 20)
	var wg sync.WaitGroup
	for i := range keys {
		line, k := newKey(t)
		keys[i] = k
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := w.PinHostKey(fmt.Sprintf("10.0.0.%d:22", i+1), line); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	line, newer := newKey(t)
	if err := w.PinHostKey("10.0.0.1:22", line); err != nil {
		t.Fatal(err)
	}
	keys[0] = newer
	cb, err := knownhosts.New(w.KnownHostsPath())
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		addr := fmt.Sprintf("10.0.0.%d:22", i+1)
		if err := cb(addr, fakeAddr(addr), k); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
	}
	b, _ := os.ReadFile(w.KnownHostsPath())
	if n := strings.Count(string(b), "\n"); n != len(keys) {
		t.Fatalf("known_hosts has %d lines, want %d", n, len(keys))
	}
	if err := w.UnpinHost("10.0.0.1:22"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(w.KnownHostsPath())
	if strings.Contains(string(b), "10.0.0.1 ") {
		t.Fatalf("unpinned host still there")
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// The workspace's files get their own modes, whatever a file they replace had, and no
// temporary file is left beside them.
func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws")
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.WriteFile(w.KnownHostsPath(), []byte("# kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	line, _ := newKey(t)
	if err := w.PinHostKey("10.0.0.1:22", line); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{KeyFile: 0o600, KeyFile + ".pub": 0o644, KnownHostsFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", name, fi.Mode().Perm(), err, want)
		}
	}
	if b, _ := os.ReadFile(w.KnownHostsPath()); !strings.HasPrefix(string(b), "# kept\n10.0.0.1 ") {
		t.Errorf("known_hosts = %q", b)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
