package etcdtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A member started without a data directory serves, and Stop removes the directory it made;
// a data directory given in Options stays.
func TestStartStopDataDir(t *testing.T) {
	p, err := NewPKI(t.TempDir(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	m := Start(t, p, Options{})
	if _, err := m.MustClient(t).Put(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Dir(m.DataDir)
	if _, err := os.Stat(filepath.Join(m.DataDir, "member")); err != nil {
		t.Fatalf("data directory: %v", err)
	}
	m.Stop()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("%s after Stop: %v, want it removed", tmp, err)
	}
	m.Stop() // twice is fine

	given := filepath.Join(t.TempDir(), "data")
	m = Start(t, p, Options{DataDir: given})
	m.Stop()
	if _, err := os.Stat(filepath.Join(given, "member")); err != nil {
		t.Errorf("given data directory after Stop: %v, want it kept", err)
	}
}
