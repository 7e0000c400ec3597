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

// staticEnv is a cluster file of the static provider whose machines all are
// one real sshd on this host, and the agent to push.
type staticEnv struct {
	dir, file, agent string
}

// newStaticEnv writes a cluster of profile prof with a control-plane
// machine cp-1 (as root) and a worker machine per user in workers.
func newStaticEnv(t *testing.T, prof string, workers ...string) *staticEnv {
	t.Helper()
	srv := sshdtest.Start(t)
	t.Cleanup(agentbuild.Cleanup)
	e := &staticEnv{dir: t.TempDir(), agent: agentbuild.Build(t, agentbuild.Variant{Version: "static-test"})}
	e.file = filepath.Join(e.dir, "cluster.yaml")
	host := func(name, user string) string {
		return fmt.Sprintf("      - {name: %s, address: %s, port: %d, user: %s, identityFile: %s}\n", name, srv.Host, srv.Port, user, srv.ClientKeyFile)
	}
	hosts := host("cp-1", "root")
	for i, u := range workers {
		hosts += host(fmt.Sprintf("worker-%d", i+1), u)
	}
	nodes := "  - {name: cp, role: control-plane, count: 1}\n"
	if len(workers) > 0 {
		nodes += fmt.Sprintf("  - {name: worker, role: worker, count: %d}\n", len(workers))
	}
	cluster := "apiVersion: kthw.dev/v1alpha1\nkind: Cluster\nname: static\nprofile: " + prof +
		"\nprovider:\n  type: static\n  static:\n    hosts:\n" + hosts + "nodes:\n" + nodes
	if err := os.WriteFile(e.file, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs the CLI in-process on the cluster, with the agent's
// directories under the test's (never this host's own).
func (e *staticEnv) run(args ...string) (string, string, error) {
	args = append(args, "-f", e.file, "--workspace", filepath.Join(e.dir, "ws"), "--agent-binary", e.agent,
		"--agent-dir", filepath.Join(e.dir, "agent"), "--blob-dir", filepath.Join(e.dir, "blobs"))
	var stdout, stderr bytes.Buffer
	err := New("test", strings.NewReader(""), &stdout, &stderr).Run(context.Background(), args)
	return stdout.String(), stderr.String(), err
}

// TestStaticProvider runs up, status and down with the static provider
// against a real sshd: three "machines" behind one sshd as root and two
// sudo users, host keys trusted on first use and then pinned.
func TestStaticProvider(t *testing.T) {
	e := newStaticEnv(t, "debian", sshdtest.UserSudo, sshdtest.UserNoisy)
	run := func(args ...string) (string, string, error) {
		// The "machines" are this host: never prepare it as a node.
		return e.run(append(args, "--no-node-prep")...)
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
	kh := filepath.Join(e.dir, "ws", "known_hosts")
	before, err := os.ReadFile(kh)
	if err != nil || len(before) == 0 {
		t.Fatalf("known_hosts after up --accept-new: %q %v", before, err)
	}
	if _, stderr, err := run("down", "--yes"); err != nil {
		t.Fatalf("down: %v\n%s", err, stderr)
	}
	// The machines stay, and so do the keys the user accepted for them.
	if after, _ := os.ReadFile(kh); !bytes.Equal(after, before) {
		t.Errorf("known_hosts changed by down:\n%s\nwas:\n%s", after, before)
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
	e := newStaticEnv(t, other)
	_, stderr, err := e.run("plan", "--accept-new")
	if err == nil || !strings.Contains(stderr, want) || !strings.Contains(stderr, "the node runs") {
		t.Fatalf("plan with profile %s on this host: err=%v\n%s", other, err, stderr)
	}
	if strings.Contains(stderr, "hostname") || strings.Contains(stderr, "packages") {
		t.Fatalf("steps ran after the facts:\n%s", stderr)
	}
}
