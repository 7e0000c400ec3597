package server

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBinaryHashStamp(t *testing.T) {
	content := []byte("an agent binary")
	h := sha256.Sum256(content)
	sum := hex.EncodeToString(h[:])
	dir := filepath.Join(t.TempDir(), sum)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "kthw-agent")
	if err := os.WriteFile(exe, content, 0o700); err != nil {
		t.Fatal(err)
	}
	stamp := filepath.Join(dir, stampName)

	got, err := binaryHash(exe)
	if err != nil || got != sum {
		t.Fatalf("first hash = %s, %v; want %s", got, err, sum)
	}
	b, err := os.ReadFile(stamp)
	if err != nil || !strings.HasPrefix(string(b), sum+" ") {
		t.Fatalf("stamp = %q, %v", b, err)
	}
	if fi, _ := os.Stat(stamp); fi.Mode().Perm() != 0o600 {
		t.Errorf("stamp mode %v, want 0600", fi.Mode().Perm())
	}

	// The stamp answers while the binary is unchanged: a stamp naming another hash for the
	// same identity is believed, which shows the file was not read.
	other := strings.Repeat("ab", 32)
	forged := other + strings.TrimPrefix(string(b), sum)
	if err := os.WriteFile(stamp, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := binaryHash(exe); got != other {
		t.Fatalf("with an identity-matching stamp: %s, want the stamp's %s", got, other)
	}

	// Replaced by rename (what an upload does): another identity, hashed again, and not
	// stamped because it is not the binary its directory names.
	tmp := exe + ".new"
	if err := os.WriteFile(tmp, []byte("something else"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, exe); err != nil {
		t.Fatal(err)
	}
	h2 := sha256.Sum256([]byte("something else"))
	if got, _ := binaryHash(exe); got != hex.EncodeToString(h2[:]) {
		t.Fatalf("replaced binary hashed to %s", got)
	}
	if b, _ := os.ReadFile(stamp); string(b) != forged {
		t.Fatalf("a binary that is not its directory's hash rewrote the stamp: %q", b)
	}

	// Rewritten in place with the same size: ctime changes, hashed again.
	if err := os.WriteFile(exe, content, 0o700); err != nil {
		t.Fatal(err)
	}
	if got, _ := binaryHash(exe); got != sum {
		t.Fatalf("rewritten binary = %s, want %s", got, sum)
	}
}

func TestBinaryHashElsewhereWritesNoStamp(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "agent")
	if err := os.WriteFile(exe, []byte("x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := binaryHash(exe); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files beside a binary outside the content-addressed layout: %v", ents)
	}
}
