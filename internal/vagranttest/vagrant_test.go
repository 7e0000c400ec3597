package vagranttest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestVagrantfileValidates runs `vagrant validate` on the repository's
// Vagrantfile (provider blocks are checked by the provider plugins, which a
// CI machine does not have, hence --ignore-provider).
func TestVagrantfileValidates(t *testing.T) {
	if _, err := exec.LookPath("vagrant"); err != nil {
		t.Skip("vagrant is not installed (scripts/setup.sh installs it)")
	}
	cmd := exec.Command("vagrant", "validate", "--ignore-provider")
	cmd.Dir = "../.."
	cmd.Env = append(cmd.Environ(), "VAGRANT_CHECKPOINT_DISABLE=1", "VAGRANT_HOME="+t.TempDir(), "VAGRANT_DOTFILE_PATH="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "validated successfully") {
		t.Fatalf("vagrant validate: %v\n%s", err, out)
	}
}
