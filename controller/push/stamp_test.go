package push

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLocateHashStamp(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kthw-agent")
	stamp := filepath.Join(dir, "ws", "agent.sha256")
	if err := os.Mkdir(filepath.Dir(stamp), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(content string) string {
		t.Helper()
		tmp := bin + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256([]byte(content))
		return hex.EncodeToString(h[:])
	}
	locate := func() string {
		t.Helper()
		hashCache.Clear() // a new controller process
		r, err := Locate(bin, "", stamp)
		if err != nil {
			t.Fatal(err)
		}
		if r.RemotePath != DefaultDir+"/"+r.SHA256+"/"+BinaryName {
			t.Fatalf("remote path %s for %s", r.RemotePath, r.SHA256)
		}
		return r.SHA256
	}

	want := write("agent one")
	if got := locate(); got != want {
		t.Fatalf("hash %s, want %s", got, want)
	}
	b, err := os.ReadFile(stamp)
	if err != nil || !strings.HasPrefix(string(b), want+" ") {
		t.Fatalf("stamp %q, %v", b, err)
	}
	if fi, _ := os.Stat(stamp); fi.Mode().Perm() != 0o600 {
		t.Errorf("stamp mode %v", fi.Mode().Perm())
	}
	// An identity-matching stamp is believed: the binary is not read again.
	forged := strings.Repeat("cd", 32) + strings.TrimPrefix(string(b), want)
	if err := os.WriteFile(stamp, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := locate(); got != strings.Repeat("cd", 32) {
		t.Fatalf("stamp not used: %s", got)
	}
	// A new build at the same path: hashed again, stamp rewritten.
	want = write("agent two")
	if got := locate(); got != want {
		t.Fatalf("after a rebuild: %s, want %s", got, want)
	}
	if b, _ := os.ReadFile(stamp); !strings.HasPrefix(string(b), want+" ") {
		t.Fatalf("stamp after a rebuild: %q", b)
	}
	// A damaged stamp is ignored.
	if err := os.WriteFile(stamp, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := locate(); got != want {
		t.Fatalf("with a damaged stamp: %s", got)
	}
	// So is one whose identity matches but whose hash is not 64 lower-case hex digits: it
	// would name another remote path.
	b, err = os.ReadFile(stamp)
	if err != nil {
		t.Fatal(err)
	}
	_, id, _ := strings.Cut(string(b), " ")
	for _, bad := range []string{strings.Repeat("CD", 32), "../../../../../../../tmp/" + strings.Repeat("x", 39)} {
		if len(bad) != 64 {
			t.Fatalf("bad hash %q is %d long", bad, len(bad))
		}
		if err := os.WriteFile(stamp, []byte(bad+" "+id), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := locate(); got != want {
			t.Fatalf("with stamp hash %q: %s", bad, got)
		}
	}
}
