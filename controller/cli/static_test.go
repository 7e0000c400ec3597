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
	"github.com/kthw/kthw/controller/workspace"
)

// TestStaticProvider runs up, status and down with the static provider
// against a real sshd: three "machines" behind one sshd as root and two
// sudo users, host keys trusted on first use and then pinned.
func TestStaticProvider(t *testing.T) {
	srv := sshdtest.Start(t)
	t.Cleanup(agentbuild.Cleanup)
	agent := agentbuild.Build(t, agentbuild.Variant{Version: "static-test"})
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.yaml")
	cluster := fmt.Sprintf(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: static
profile: debian
provider:
  type: static
  static:
    hosts:
      - {name: cp-1, address: %[1]s, port: %[2]d, user: root, identityFile: %[3]s}
      - {name: worker-1, address: %[1]s, port: %[2]d, user: %[4]s, identityFile: %[3]s}
      - {name: worker-2, address: %[1]s, port: %[2]d, user: %[5]s, identityFile: %[3]s}
nodes:
  - {name: cp, role: control-plane, count: 1}
  - {name: worker, role: worker, count: 2}
`, srv.Host, srv.Port, srv.ClientKeyFile, sshdtest.UserSudo, sshdtest.UserNoisy)
	if err := os.WriteFile(file, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, error) {
		// The "machines" are this host: never prepare it as a node.
		args = append(args, "--no-node-prep", "-f", file, "--workspace", filepath.Join(dir, "ws"), "--agent-binary", agent,
			"--agent-dir", filepath.Join(dir, "agent"), "--blob-dir", filepath.Join(dir, "blobs"))
		var stdout, stderr bytes.Buffer
		err := New("test", strings.NewReader(""), &stdout, &stderr).Run(context.Background(), args)
		return stdout.String(), stderr.String(), err
	}

	// Strict host keys: an unknown machine is refused, by name.
	if _, stderr, err := run("up"); err == nil || !strings.Contains(stderr, "--accept-new") {
		t.Fatalf("strict up: err=%v stderr=%s", err, stderr)
	}
	if out, stderr, err := run("up", "--accept-new"); err != nil {
		t.Fatalf("up --accept-new: %v\n%s\n%s", err, out, stderr)
	}
	out, stderr, err := run("status", "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, stderr)
	}
	var st clusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("status nodes: %+v", st.Nodes)
	}
	for _, n := range st.Nodes {
		if !n.OK || n.State != "unknown" || n.Facts.OS == "" || n.AgentUploaded {
			t.Fatalf("node %+v", n)
		}
	}
	if _, stderr, err := run("down", "--yes"); err != nil {
		t.Fatalf("down: %v\n%s", err, stderr)
	}
	// Static machines are not destroyed: they still answer.
	if _, stderr, err := run("status"); err != nil {
		t.Fatalf("status after down: %v\n%s", err, stderr)
	}
}

// TestWorkspaceInUse: a second controller on a workspace fails at once,
// naming the holder, and changes nothing.
func TestWorkspaceInUse(t *testing.T) {
	dir := t.TempDir()
	ws, err := workspace.Open(filepath.Join(dir, "ws"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	file := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(file, []byte(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: busy
profile: debian
provider:
  type: static
  static:
    hosts: [{name: cp-1, address: 127.0.0.1, port: 1}]
nodes: [{name: cp, role: control-plane, count: 1}]
`), 0o644)
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("x"), 0o755)
	var stdout, stderr bytes.Buffer
	err = New("test", strings.NewReader(""), &stdout, &stderr).Run(context.Background(),
		[]string{"up", "-f", file, "--workspace", filepath.Join(dir, "ws"), "--agent-binary", agent})
	if err == nil || !strings.Contains(err.Error(), "in use by another kthw-controller") || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("err = %v", err)
	}
}

// TestWrongReleaseRefused: node preparation of a profile for another
// release than a node runs stops at the node's facts, naming both. It runs
// as plan (Check only) against this host, so nothing could change here even
// if the check did not hold.
func TestWrongReleaseRefused(t *testing.T) {
	osRelease, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skip("no /etc/os-release")
	}
	other, want := "ubuntu", "is for ubuntu 24.04"
	if strings.Contains(string(osRelease), "ID=ubuntu") {
		other, want = "debian", "is for debian 12"
	}
	srv := sshdtest.Start(t)
	t.Cleanup(agentbuild.Cleanup)
	agent := agentbuild.Build(t, agentbuild.Variant{Version: "static-test"})
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.yaml")
	cluster := fmt.Sprintf(`apiVersion: kthw.dev/v1alpha1
kind: Cluster
name: static
profile: %s
provider:
  type: static
  static:
    hosts:
      - {name: cp-1, address: %s, port: %d, user: root, identityFile: %s}
nodes:
  - {name: cp, role: control-plane, count: 1}
`, other, srv.Host, srv.Port, srv.ClientKeyFile)
	if err := os.WriteFile(file, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = New("test", strings.NewReader(""), &stdout, &stderr).Run(context.Background(), []string{"plan", "--accept-new",
		"-f", file, "--workspace", filepath.Join(dir, "ws"), "--agent-binary", agent,
		"--agent-dir", filepath.Join(dir, "agent"), "--blob-dir", filepath.Join(dir, "blobs")})
	if err == nil || !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "the node runs") {
		t.Fatalf("plan with profile %s on this host: err=%v\n%s\n%s", other, err, stdout.String(), stderr.String())
	}
	if strings.Contains(stderr.String(), "hostname") || strings.Contains(stderr.String(), "packages") {
		t.Fatalf("steps ran after the facts:\n%s", stderr.String())
	}
}
