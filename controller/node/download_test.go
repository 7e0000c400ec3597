package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kthw/kthw/controller/internal/agentbuild"
)

// TestDownloadFile streams a file back from a real agent over SSH: the
// local copy is complete and 0600, checked against the agent's trailer and
// the expected hash; a mismatch or a missing file leaves nothing behind.
func TestDownloadFile(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	c := f.connect(t, "root")
	ctx := context.Background()
	content := make([]byte, 5<<20+777)
	rand.Read(content)
	remote := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(remote, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	want := hex.EncodeToString(sum[:])
	dir := t.TempDir()
	local := filepath.Join(dir, "copy.db")
	var last int64
	d, err := DownloadFile(ctx, c.Agent, remote, local, 0o600, want, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(local)
	fi, _ := os.Stat(local)
	if !bytes.Equal(got, content) || d.SHA256 != want || d.Size != int64(len(content)) || fi.Mode().Perm() != 0o600 || last != d.Size {
		t.Fatalf("downloaded %d bytes %s mode %v, progress %d", len(got), d.SHA256, fi.Mode(), last)
	}
	_, err = DownloadFile(ctx, c.Agent, remote, filepath.Join(dir, "bad.db"), 0o600, strings.Repeat("0", 64), nil)
	if !errors.Is(err, ErrDownloadCorrupted) {
		t.Fatalf("wrong hash: %v", err)
	}
	_, err = DownloadFile(ctx, c.Agent, filepath.Join(t.TempDir(), "missing"), filepath.Join(dir, "missing.db"), 0o600, "", nil)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "copy.db" {
		t.Fatalf("left in the directory: %v", entries)
	}
}
