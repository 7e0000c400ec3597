package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/internal/sshdtest"
)

// TestAgentStatusJSON runs the verb end to end against a real sshd: two
// targets (root and a sudo user) answer, one unreachable target is reported
// by name, and a second run uploads nothing.
func TestAgentStatusJSON(t *testing.T) {
	srv := sshdtest.Start(t)
	t.Cleanup(agentbuild.Cleanup)
	agent := agentbuild.Build(t, agentbuild.Variant{Version: "cli-test"})
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")

	run := func(extra ...string) (statusOut, string, error) {
		args := []string{"agent", "status", "-o", "json",
			"--target", "root@" + srv.Addr,
			"--target", sshdtest.UserSudo + "@" + srv.Addr,
			"--identity", srv.ClientKeyFile, "--known-hosts", kh,
			"--agent-binary", agent,
			"--agent-dir", filepath.Join(dir, "agent"), "--blob-dir", filepath.Join(dir, "blobs")}
		args = append(args, extra...)
		var stdout, stderr bytes.Buffer
		err := New("test", strings.NewReader(""), &stdout, &stderr).Run(context.Background(), args)
		var out statusOut
		if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
			t.Fatalf("decode %q: %v (stderr %s)", stdout.String(), jerr, stderr.String())
		}
		return out, stderr.String(), err
	}

	// Unknown host key and no --accept-new: refused, nothing pushed.
	out, stderr, err := run()
	if err == nil || len(out.Targets) != 2 || out.Targets[0].OK || !strings.Contains(stderr, "--accept-new") {
		t.Fatalf("strict run: err=%v out=%+v stderr=%s", err, out, stderr)
	}

	out, stderr, err = run("--accept-new")
	if err != nil {
		t.Fatalf("accept-new run: %v\n%s\n%s", err, stderr, srv.Log())
	}
	osID := osReleaseID(t)
	for _, tg := range out.Targets {
		if !tg.OK || tg.Agent.Version != "cli-test" || tg.Facts.OS.ID != osID || tg.Facts.Hostname == "" {
			t.Fatalf("target %+v", tg)
		}
	}
	if !out.Targets[0].Agent.Uploaded && !out.Targets[1].Agent.Uploaded {
		t.Fatalf("first run uploaded nothing: %+v", out)
	}
	if fi, err := os.Stat(kh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("known_hosts: %v %v", fi.Mode(), err)
	}

	// Strict again, plus one unreachable target.
	out, stderr, err = run("--target", "root@127.0.0.1:1")
	if err == nil || len(out.Targets) != 3 {
		t.Fatalf("third run: err=%v out=%+v", err, out)
	}
	for _, tg := range out.Targets[:2] {
		if !tg.OK || tg.Agent.Uploaded || tg.Agent.UploadBytes != 0 {
			t.Fatalf("re-run target %+v", tg)
		}
	}
	if out.Targets[2].OK || !strings.Contains(stderr, "root@127.0.0.1:1:") || !strings.Contains(err.Error(), "1 of 3") {
		t.Fatalf("unreachable target not reported: %+v %s %v", out.Targets[2], stderr, err)
	}
}

type statusOut struct {
	Targets []struct {
		Target string `json:"target"`
		OK     bool   `json:"ok"`
		Error  string `json:"error"`
		Agent  struct {
			Version     string `json:"version"`
			SHA256      string `json:"sha256"`
			Uploaded    bool   `json:"uploaded"`
			UploadBytes int64  `json:"upload_bytes"`
		} `json:"agent"`
		Facts struct {
			OS struct {
				ID string `json:"id"`
			} `json:"os"`
			Hostname string `json:"hostname"`
		} `json:"facts"`
		Status struct {
			UnitsAvailable bool   `json:"units_available"`
			UnitsDetail    string `json:"units_detail"`
		} `json:"status"`
	} `json:"targets"`
}

func osReleaseID(t *testing.T) string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "ID="); ok {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatal(fmt.Errorf("no ID in /etc/os-release"))
	return ""
}
