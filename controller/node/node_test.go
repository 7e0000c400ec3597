package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/internal/agentbuild"
	"github.com/kthw/kthw/controller/internal/sshdtest"
	"github.com/kthw/kthw/controller/session"
	"github.com/kthw/kthw/controller/sshx"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// These tests run the whole path against a real OpenSSH sshd on loopback and
// a real kthw-agent binary: dial, push, start over the SSH session, gRPC on
// yamux, modules.

func TestMain(m *testing.M) {
	defer agentbuild.Cleanup()
	sshdtest.Main(m)
}

type fixture struct {
	srv   *sshdtest.Server
	agent string
	opts  Options
}

func newFixture(t *testing.T, v agentbuild.Variant) *fixture {
	t.Helper()
	srv := sshdtest.Start(t)
	dir := t.TempDir()
	f := &fixture{srv: srv, agent: agentbuild.Build(t, v)}
	f.opts = Options{
		SSH: sshx.Options{
			IdentityFiles:  []string{srv.ClientKeyFile},
			KnownHostsFile: srv.WriteKnownHosts(t),
		},
		AgentBinary:       f.agent,
		AgentDir:          filepath.Join(dir, "agent"),
		BlobDir:           filepath.Join(dir, "blobs"),
		ControllerVersion: "test",
	}
	return f
}

func (f *fixture) target(user string) sshx.Target {
	return sshx.Target{User: user, Host: f.srv.Host, Port: f.srv.Port}
}

func (f *fixture) connect(t *testing.T, user string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Connect(ctx, f.target(user), f.opts)
	if err != nil {
		t.Fatalf("connect %s: %v\nsshd log:\n%s", user, err, f.srv.Log())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFullPathAsRoot(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	ctx := context.Background()
	c := f.connect(t, "root")

	local, size, err := HashFile(f.agent)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Push.Uploaded || c.Push.Bytes != size {
		t.Fatalf("first push: uploaded=%v bytes=%d, want true %d", c.Push.Uploaded, c.Push.Bytes, size)
	}
	if c.Handshake.GetBinarySha256() != local || c.Handshake.GetAgentVersion() != "itest" || c.Handshake.GetApiVersion() != agentv1.APIVersion {
		t.Fatalf("handshake = %v, want sha %s version itest", c.Handshake, local)
	}
	st, err := os.Stat(filepath.Dir(c.Push.RemotePath))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("agent dir: %v, mode %v", err, st.Mode())
	}

	facts, err := c.Agent.Facts(ctx, &agentv1.FactsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	osRelease, _ := os.ReadFile("/etc/os-release")
	if facts.GetOs().GetId() == "" || !strings.Contains(string(osRelease), "ID="+facts.GetOs().GetId()) {
		t.Fatalf("facts os id %q not in /etc/os-release", facts.GetOs().GetId())
	}
	host, _ := os.Hostname()
	if facts.GetHostname() != host || facts.GetCpus() < 1 || facts.GetMemoryBytes() == 0 {
		t.Fatalf("facts = %v", facts)
	}
	status, err := c.Agent.Status(ctx, &agentv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if status.GetUptimeSeconds() <= 0 || status.GetAgentVersion() != "itest" {
		t.Fatalf("status = %v", status)
	}
	if _, err := os.Stat("/run/systemd/system"); err != nil && (status.GetUnitsAvailable() || status.GetUnitsDetail() == "") {
		t.Fatalf("no systemd here, yet status = %v", status)
	}

	// command: output streamed, creates guard makes it idempotent.
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	cmd := &agentv1.RunModuleRequest{Name: "touch", Module: &agentv1.RunModuleRequest_Command{Command: &agentv1.CommandModule{
		Argv:    []string{"sh", "-c", "echo out-line; echo err-line >&2; touch " + marker},
		Creates: marker,
	}}}
	var lines []string
	res, err := RunModule(ctx, c.Agent, cmd, func(ev *agentv1.RunModuleEvent) { lines = append(lines, ev.GetLog().GetText()) })
	if err != nil || !res.GetChanged() || res.GetExitCode() != 0 {
		t.Fatalf("command: %v %v", res, err)
	}
	if got := strings.Join(lines, "|"); !strings.Contains(got, "out-line") || !strings.Contains(got, "err-line") {
		t.Fatalf("streamed lines %q", got)
	}
	res, err = RunModule(ctx, c.Agent, cmd, nil)
	if err != nil || res.GetChanged() || res.GetSkippedReason() == "" {
		t.Fatalf("second command run: %v %v", res, err)
	}
	failing := &agentv1.RunModuleRequest{Name: "fail", Module: &agentv1.RunModuleRequest_Command{Command: &agentv1.CommandModule{
		Argv: []string{"sh", "-c", "echo nope >&2; exit 3"},
	}}}
	res, err = RunModule(ctx, c.Agent, failing, nil)
	if !errors.Is(err, ErrModule) || res.GetExitCode() != 3 || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("failing command: %v %v", res, err)
	}

	// file: check shows a diff and changes nothing; apply; re-apply is unchanged.
	path := filepath.Join(dir, "etc", "kthw.conf")
	file := func(check bool, content string) *agentv1.RunModuleRequest {
		return &agentv1.RunModuleRequest{Name: "conf", CheckOnly: check, Module: &agentv1.RunModuleRequest_File{File: &agentv1.FileModule{
			Path: path, Source: &agentv1.FileModule_Content{Content: []byte(content)}, Mode: 0o640, MakeParents: true,
		}}}
	}
	res, err = RunModule(ctx, c.Agent, file(true, "a=1\n"), nil)
	if err != nil || !res.GetChanged() || !strings.Contains(res.GetDiff(), "+a=1") {
		t.Fatalf("file check: %v %v", res, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("check created the file: %v", err)
	}
	if res, err = RunModule(ctx, c.Agent, file(false, "a=1\n"), nil); err != nil || !res.GetChanged() {
		t.Fatalf("file apply: %v %v", res, err)
	}
	if res, err = RunModule(ctx, c.Agent, file(false, "a=1\n"), nil); err != nil || res.GetChanged() {
		t.Fatalf("file re-apply: %v %v", res, err)
	}
	st, err = os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("file mode: %v %v", st.Mode(), err)
	}

	// A second connection finds the same binary and uploads nothing.
	c.Close()
	c2 := f.connect(t, "root")
	if c2.Push.Uploaded || c2.Push.Bytes != 0 || c2.Push.SHA256 != local {
		t.Fatalf("re-push: %+v", c2.Push)
	}
}

func TestSudoUser(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	c := f.connect(t, sshdtest.UserSudo)
	// The agent runs as root through sudo -n: a file it writes is root's.
	path := filepath.Join(t.TempDir(), "by-agent")
	res, err := RunModule(context.Background(), c.Agent, &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Command{
		Command: &agentv1.CommandModule{Argv: []string{"sh", "-c", "id -u > " + path}},
	}}, nil)
	if err != nil {
		t.Fatalf("%v %v", res, err)
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("agent runs as uid %q, want 0", b)
	}
}

func TestNoisyLoginShell(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	c := f.connect(t, sshdtest.UserNoisy)
	if !bytes.Contains(c.Noise, []byte("Welcome to kthw-noisy")) {
		t.Fatalf("noise before the stream = %q", c.Noise)
	}
	if _, err := c.Agent.Facts(context.Background(), &agentv1.FactsRequest{}); err != nil {
		t.Fatalf("facts through a noisy shell: %v", err)
	}
}

func TestSudoPasswordRequired(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	_, err := Connect(context.Background(), f.target(sshdtest.UserPassword), f.opts)
	if !errors.Is(err, sshx.ErrSudoPassword) {
		t.Fatalf("err = %v, want ErrSudoPassword", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, sshdtest.UserPassword) || !strings.Contains(msg, "NOPASSWD") {
		t.Fatalf("error is not one clear line naming the user: %q", msg)
	}
	if entries, _ := os.ReadDir(f.opts.AgentDir); len(entries) != 0 {
		t.Fatalf("agent dir has %d entries after a refused sudo", len(entries))
	}
}

func TestChangedHostKeyRefused(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	before, _ := os.ReadFile(f.opts.SSH.KnownHostsFile)
	f.srv.RotateHostKeys(t)
	_, err := Connect(context.Background(), f.target("root"), f.opts)
	var hk *sshx.HostKeyError
	if !errors.As(err, &hk) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("err = %v, want a changed host key error", err)
	}
	after, _ := os.ReadFile(f.opts.SSH.KnownHostsFile)
	if !bytes.Equal(before, after) {
		t.Fatalf("known_hosts changed after a refused key")
	}
	if _, err := os.Stat(f.opts.AgentDir); !os.IsNotExist(err) {
		t.Fatalf("agent pushed to a host with a changed key")
	}
}

func TestOtherAPIVersionRefused(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "future", APIVersion: "99"})
	_, err := Connect(context.Background(), f.target("root"), f.opts)
	if !errors.Is(err, session.ErrAPIVersion) || !strings.Contains(err.Error(), "99") {
		t.Fatalf("err = %v, want API version mismatch naming 99", err)
	}
}

func TestLargeTransfer(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	c := f.connect(t, "root")
	ctx := context.Background()

	src := filepath.Join(t.TempDir(), "big")
	h := sha256.New()
	out, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.MultiWriter(out, h), rand.Reader, 64<<20); err != nil {
		t.Fatal(err)
	}
	out.Close()
	want := hex.EncodeToString(h.Sum(nil))

	dst := filepath.Join(t.TempDir(), "copy")
	var last *agentv1.Progress
	res, err := PutFile(ctx, c.Agent, src, &agentv1.FileModule{Path: dst, Mode: 0o600}, func(ev *agentv1.RunModuleEvent) {
		if p := ev.GetProgress(); p != nil {
			last = p
		}
	})
	if err != nil || !res.GetChanged() {
		t.Fatalf("put 64 MiB: %v %v", res, err)
	}
	if last == nil || last.GetDone() != 64<<20 {
		t.Fatalf("last progress %v", last)
	}
	got, _, err := HashFile(dst)
	if err != nil || got != want {
		t.Fatalf("copy sha256 %s, want %s (%v)", got, want, err)
	}
	// The same content again: no upload, no change.
	st, err := c.Agent.StatBlob(ctx, &agentv1.StatBlobRequest{Sha256: want})
	if err != nil || !st.GetExists() || st.GetSize() != 64<<20 {
		t.Fatalf("stat blob: %v %v", st, err)
	}
	res, err = PutFile(ctx, c.Agent, src, &agentv1.FileModule{Path: dst, Mode: 0o600}, nil)
	if err != nil || res.GetChanged() {
		t.Fatalf("second put: %v %v", res, err)
	}
}

func TestUnreachable(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	tg := f.target("root")
	f.srv.Stop()
	_, err := Connect(context.Background(), tg, f.opts)
	if err == nil || !strings.Contains(err.Error(), strconv.Itoa(tg.Port)) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line naming the node", err)
	}
}

// An agent is started from its content-addressed path without hashing it on the node; a copy
// there that is not the binary its path names (replaced, damaged, not executable) is found by
// the Handshake's hash or by its failure to start, and uploaded again.
func TestInstalledAgentNotMatchingItsHashIsReplaced(t *testing.T) {
	f := newFixture(t, agentbuild.Variant{Version: "itest"})
	other := agentbuild.Build(t, agentbuild.Variant{Version: "itest-other"})
	c := f.connect(t, "root")
	want, size, err := HashFile(f.agent)
	if err != nil {
		t.Fatal(err)
	}
	installed := c.Push.RemotePath
	c.Close()

	copyFile := func(src string, mode os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(installed, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(installed, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func()
	}{
		{"another agent build", func() { copyFile(other, 0o700) }},
		{"not executable", func() { copyFile(f.agent, 0o600) }},
		{"removed", func() {
			if err := os.Remove(installed); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.damage()
			c := f.connect(t, "root")
			if !c.Push.Uploaded || c.Push.Bytes != size {
				t.Errorf("push = %+v, want an upload of %d bytes", c.Push, size)
			}
			if got := c.Handshake.GetBinarySha256(); got != want || c.Handshake.GetAgentVersion() != "itest" {
				t.Errorf("running agent %s (%s), want %s", got, c.Handshake.GetAgentVersion(), want)
			}
			c.Close()
			got, _, err := HashFile(installed)
			if err != nil || got != want {
				t.Errorf("installed file hashes to %s (%v), want %s", got, err, want)
			}
			// And the next connection starts it without uploading.
			c = f.connect(t, "root")
			if c.Push.Uploaded {
				t.Errorf("second connection uploaded again: %+v", c.Push)
			}
			c.Close()
		})
	}
}
