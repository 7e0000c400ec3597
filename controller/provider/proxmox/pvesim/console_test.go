package pvesim_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestConsoleLines: what a guest prints when cloud-init's last stage runs,
// at the first boot (with the host key block) and later, against golden
// files (testdata/<test name>.golden; -update rewrites them).
func TestConsoleLines(t *testing.T) {
	at := time.Date(2026, 1, 6, 15, 27, 32, 0, time.UTC)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR/6mRdACoNszPBcSS9tCUeot7CE root@c1"
	for name, first := range map[string]bool{"first_boot": true, "later_boot": false} {
		t.Run(name, func(t *testing.T) {
			got := strings.Join(pvesim.ConsoleLines("c1", []string{key}, at, 12340*time.Millisecond, first), "\n") + "\n"
			path := filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Fatalf("console differs from %s (run with -update to accept):\n%s", path, got)
			}
		})
	}
}
