package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kthw/kthw/agent/internal/systemdtest"
	"github.com/kthw/kthw/agent/transport"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// startAgent serves a Server through transport.Serve on one end of an
// in-memory pipe, as over the agent's stdio, and returns a client on the
// other.
func startAgent(t *testing.T, opts Options) agentv1.AgentServiceClient {
	t.Helper()
	agentEnd, controllerEnd := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- transport.Serve(ctx, agentEnd, New(opts).Register, nil) }()

	controllerMux, err := yamux.Client(controllerEnd, agentv1.MuxConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///agent",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return controllerMux.Open() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		controllerMux.Close()
		// The controller went away: Serve ends by itself, without an error.
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("serve after the controller closed: %v", err)
			}
		case <-time.After(10 * time.Second):
			cancel()
			t.Errorf("serve still running 10s after the controller closed: %v", <-served)
		}
		cancel()
	})
	return agentv1.NewAgentServiceClient(cc)
}

// testAgent is an agent rooted in a temporary directory that looks like a
// node without systemd.
type testAgent struct {
	client  agentv1.AgentServiceClient
	root    string
	blobDir string
	exe     []byte
}

func newTestAgent(t *testing.T) *testAgent {
	t.Helper()
	a := &testAgent{root: t.TempDir(), exe: []byte("pretend agent binary")}
	a.blobDir = filepath.Join(a.root, "/var/lib/kthw/blobs")
	for p, content := range map[string]string{
		"/etc/os-release":  "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
		"/proc/meminfo":    "MemTotal: 2048 kB\n",
		"/proc/1/comm":     "bash\n",
		"/usr/bin/apt-get": "#!/bin/sh\n",
		"/agent":           string(a.exe),
	} {
		writeFile(t, filepath.Join(a.root, p), content, 0o755)
	}
	a.client = startAgent(t, Options{Version: "v1.2.3-test", Root: a.root, ExePath: filepath.Join(a.root, "/agent")})
	return a
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func hexSHA(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// moduleRun is what one RunModule call streamed.
type moduleRun struct {
	logs     []*agentv1.LogLine
	progress []*agentv1.Progress
	result   *agentv1.ModuleResult
}

func (r *moduleRun) lines(stream agentv1.LogLine_Stream) []string {
	var out []string
	for _, l := range r.logs {
		if l.GetStream() == stream {
			out = append(out, l.GetText())
		}
	}
	return out
}

// runModule calls RunModule and collects its events. It fails the test if
// the stream does not end with exactly one result.
func runModule(t *testing.T, c agentv1.AgentServiceClient, req *agentv1.RunModuleRequest) (*moduleRun, error) {
	t.Helper()
	stream, err := c.RunModule(t.Context(), req)
	if err != nil {
		return nil, err
	}
	run := &moduleRun{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if run.result != nil {
				t.Fatalf("error after the result: %v", err)
			}
			return run, err
		}
		if run.result != nil {
			t.Fatalf("event after the result: %v", ev)
		}
		switch e := ev.GetEvent().(type) {
		case *agentv1.RunModuleEvent_Log:
			run.logs = append(run.logs, e.Log)
		case *agentv1.RunModuleEvent_Progress:
			run.progress = append(run.progress, e.Progress)
		case *agentv1.RunModuleEvent_Result:
			run.result = e.Result
		}
	}
	if run.result == nil {
		t.Fatal("stream ended without a result")
	}
	return run, nil
}

func mustRun(t *testing.T, c agentv1.AgentServiceClient, req *agentv1.RunModuleRequest) *moduleRun {
	t.Helper()
	run, err := runModule(t, c, req)
	if err != nil {
		t.Fatalf("RunModule: %v", err)
	}
	return run
}

func commandReq(m *agentv1.CommandModule) *agentv1.RunModuleRequest {
	return &agentv1.RunModuleRequest{Name: "test", Module: &agentv1.RunModuleRequest_Command{Command: m}}
}

func fileReq(checkOnly bool, m *agentv1.FileModule) *agentv1.RunModuleRequest {
	return &agentv1.RunModuleRequest{Name: "test", CheckOnly: checkOnly, Module: &agentv1.RunModuleRequest_File{File: m}}
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	if !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("err = %v, want message containing %q", err, msg)
	}
}

func TestHandshake(t *testing.T) {
	a := newTestAgent(t)
	resp, err := a.client.Handshake(t.Context(), &agentv1.HandshakeRequest{ControllerVersion: "c", ApiVersion: agentv1.APIVersion})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAgentVersion() != "v1.2.3-test" || resp.GetApiVersion() != agentv1.APIVersion ||
		resp.GetBinarySha256() != hexSHA(a.exe) || resp.GetPid() != int64(os.Getpid()) {
		t.Errorf("handshake = %v", resp)
	}
}

func TestHandshakeDefaultExe(t *testing.T) {
	c := startAgent(t, Options{BlobDir: t.TempDir()})
	resp, err := c.Handshake(t.Context(), &agentv1.HandshakeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetBinarySha256() != hexSHA(exe) {
		t.Errorf("binary_sha256 = %s, want the test binary's %s", resp.GetBinarySha256(), hexSHA(exe))
	}
}

func TestFactsAndStatus(t *testing.T) {
	a := newTestAgent(t)
	writeFile(t, filepath.Join(a.root, "/usr/bin/dpkg"), "#!/bin/sh\n", 0o755)
	f, err := a.client.Facts(t.Context(), &agentv1.FactsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if f.GetOs().GetId() != "debian" || f.GetOs().GetVersionCodename() != "bookworm" ||
		f.GetMemoryBytes() != 2048*1024 || f.GetPackageManager() != "apt" ||
		f.GetInitSystem() != "bash" || f.GetSystemdUsable() {
		t.Errorf("facts = %v", f)
	}

	st, err := a.client.Status(t.Context(), &agentv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetUnitsAvailable() || st.GetUnitsDetail() != "systemd is not running (PID 1 is bash)" ||
		len(st.GetUnits()) != 0 || st.GetAgentVersion() != "v1.2.3-test" || st.GetUptimeSeconds() <= 0 {
		t.Errorf("status = %v", st)
	}
}

// TestStatusOverDBus takes the D-Bus path: on a host without systemd it must
// fail softly and say why; on a host with it, every unit gets a state.
func TestStatusOverDBus(t *testing.T) {
	a := newTestAgent(t)
	if err := os.MkdirAll(filepath.Join(a.root, "/run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := a.client.Status(t.Context(), &agentv1.StatusRequest{Units: []string{"kthw-no-such.service"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status = %v", st)
	if !st.GetUnitsAvailable() {
		if !strings.Contains(st.GetUnitsDetail(), "systemd over D-Bus") {
			t.Errorf("units_detail = %q, want the D-Bus failure", st.GetUnitsDetail())
		}
		return
	}
	if len(st.GetUnits()) != 1 || st.GetUnits()[0].GetLoadState() != "not-found" {
		t.Errorf("units = %v, want one not-found", st.GetUnits())
	}
}

// TestStatusUnits asks a fake systemd on a private bus for the default units.
func TestStatusUnits(t *testing.T) {
	systemdtest.Start(t, map[string]systemdtest.Unit{
		"containerd.service": {Description: "containerd container runtime", LoadState: "loaded", ActiveState: "active", SubState: "running"},
		"etcd.service":       {Description: "etcd", LoadState: "loaded", ActiveState: "failed", SubState: "failed"},
	})
	a := newTestAgent(t)
	if err := os.MkdirAll(filepath.Join(a.root, "/run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := a.client.Status(t.Context(), &agentv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.GetUnitsAvailable() || st.GetUnitsDetail() != "" {
		t.Fatalf("status = %v", st)
	}
	var got []string
	for _, u := range st.GetUnits() {
		got = append(got, strings.Join([]string{u.GetName(), u.GetLoadState(), u.GetActiveState(), u.GetSubState(), u.GetDescription()}, "|"))
	}
	want := []string{
		"containerd.service|loaded|active|running|containerd container runtime",
		"kubelet.service|not-found|inactive|dead|",
		"etcd.service|loaded|failed|failed|etcd",
	}
	if !slices.Equal(got, want) {
		t.Errorf("units =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRunCommand(t *testing.T) {
	a := newTestAgent(t)
	run := mustRun(t, a.client, commandReq(&agentv1.CommandModule{
		Argv: []string{"sh", "-c", "echo out1; echo err1 >&2; echo out2; echo bad thing >&2; exit 2"},
	}))
	if got := run.lines(agentv1.LogLine_STREAM_STDOUT); !slices.Equal(got, []string{"out1", "out2"}) {
		t.Errorf("stdout = %q", got)
	}
	if got := run.lines(agentv1.LogLine_STREAM_STDERR); !slices.Equal(got, []string{"err1", "bad thing"}) {
		t.Errorf("stderr = %q", got)
	}
	if r := run.result; r.GetExitCode() != 2 || r.GetError() != "command exited 2: bad thing" || !r.GetChanged() {
		t.Errorf("result = %v", r)
	}

	// A creates guard makes the command idempotent.
	guarded := commandReq(&agentv1.CommandModule{
		Argv:    []string{"touch", filepath.Join(a.root, "/done")},
		Creates: "/done",
	})
	if r := mustRun(t, a.client, guarded).result; r.GetExitCode() != 0 || r.GetError() != "" || !r.GetChanged() {
		t.Errorf("first run = %v", r)
	}
	r := mustRun(t, a.client, guarded).result
	if r.GetChanged() || r.GetExitCode() != -1 || r.GetSkippedReason() != "creates: /done exists" {
		t.Errorf("second run = %v", r)
	}
	guarded.CheckOnly = true
	if r := mustRun(t, a.client, guarded).result; r.GetChanged() || r.GetSkippedReason() == "" {
		t.Errorf("check after run = %v", r)
	}
}

func TestRunCommandDeadline(t *testing.T) {
	a := newTestAgent(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	stream, err := a.client.RunModule(ctx, commandReq(&agentv1.CommandModule{Argv: []string{"sleep", "60"}}))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestRunFile(t *testing.T) {
	a := newTestAgent(t)
	m := &agentv1.FileModule{
		Path:        "/etc/kthw/config.yaml",
		Source:      &agentv1.FileModule_Content{Content: []byte("a: 1\n")},
		Mode:        0o600,
		MakeParents: true,
	}
	r := mustRun(t, a.client, fileReq(true, m)).result
	if !r.GetChanged() || !strings.Contains(r.GetDiff(), "+++ /etc/kthw/config.yaml\tdesired\n@@ -0,0 +1 @@\n+a: 1\n") {
		t.Errorf("check = %v", r)
	}
	if _, err := os.Stat(filepath.Join(a.root, "/etc/kthw")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("check created the directory: %v", err)
	}
	if r := mustRun(t, a.client, fileReq(false, m)).result; !r.GetChanged() || r.GetError() != "" || r.GetExitCode() != -1 {
		t.Errorf("apply = %v", r)
	}
	if r := mustRun(t, a.client, fileReq(false, m)).result; r.GetChanged() || r.GetDiff() != "" {
		t.Errorf("second apply = %v", r)
	}
	m.Mode = 0o640
	if r := mustRun(t, a.client, fileReq(false, m)).result; !r.GetChanged() || r.GetDiff() != "mode: 0600 -> 0640\n" {
		t.Errorf("mode change = %v", r)
	}
	fi, err := os.Stat(filepath.Join(a.root, m.Path))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("file: %v, %v", fi, err)
	}

	// A failure while running is a result with an error, not an RPC error.
	r = mustRun(t, a.client, fileReq(false, &agentv1.FileModule{Path: "/missing/dir/x"})).result
	if r.GetError() == "" || r.GetChanged() {
		t.Errorf("missing parent = %v", r)
	}
}

// putBlob uploads data, announcing sha and size, in chunks of chunk bytes.
func putBlob(ctx context.Context, c agentv1.AgentServiceClient, sha string, size int64, data []byte, chunk int) (*agentv1.PutBlobResponse, error) {
	stream, err := c.PutBlob(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Header{
		Header: &agentv1.BlobHeader{Sha256: sha, Size: size},
	}}); err != nil {
		return nil, err
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Data{Data: data[:n]}}); err != nil {
			break // the server ended the stream; CloseAndRecv tells why
		}
		data = data[n:]
	}
	return stream.CloseAndRecv()
}

// partFiles lists upload leftovers in the blob directory.
func partFiles(t *testing.T, dir string) []string {
	t.Helper()
	parts, err := filepath.Glob(filepath.Join(dir, "*.part"))
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

func TestBlobs(t *testing.T) {
	a := newTestAgent(t)
	data := []byte(strings.Repeat("kube binary ", 300_000)) // 3.6 MB
	sha := hexSHA(data)
	size := int64(len(data))

	st, err := a.client.StatBlob(t.Context(), &agentv1.StatBlobRequest{Sha256: sha})
	if err != nil || st.GetExists() {
		t.Fatalf("StatBlob before = %v, %v", st, err)
	}

	// Wrong content for the announced sha256: refused, nothing left behind.
	bad := slices.Clone(data)
	bad[12345] ^= 1
	_, err = putBlob(t.Context(), a.client, sha, size, bad, agentv1.BlobChunkSize)
	wantCode(t, err, codes.DataLoss, "sha256 mismatch: expected "+sha+" got "+hexSHA(bad))
	if parts := partFiles(t, a.blobDir); len(parts) != 0 {
		t.Errorf("left behind %q", parts)
	}
	// Too short and too long.
	_, err = putBlob(t.Context(), a.client, sha, size, data[:100], agentv1.BlobChunkSize)
	wantCode(t, err, codes.DataLoss, "size mismatch: expected 3600000 bytes got 100")
	_, err = putBlob(t.Context(), a.client, sha, 10, data, agentv1.BlobChunkSize)
	wantCode(t, err, codes.DataLoss, "size mismatch")

	resp, err := putBlob(t.Context(), a.client, sha, size, data, agentv1.BlobChunkSize)
	if err != nil || !resp.GetStored() || resp.GetSize() != size || resp.GetSha256() != sha {
		t.Fatalf("PutBlob = %v, %v", resp, err)
	}
	fi, err := os.Stat(filepath.Join(a.blobDir, sha))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != size {
		t.Errorf("stored blob: %v, %v", fi, err)
	}
	if di, err := os.Stat(a.blobDir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("blob directory: %v, %v", di, err)
	}
	resp, err = putBlob(t.Context(), a.client, sha, size, data, agentv1.BlobChunkSize)
	if err != nil || resp.GetStored() || resp.GetSize() != size {
		t.Errorf("PutBlob again = %v, %v; want already stored", resp, err)
	}
	st, err = a.client.StatBlob(t.Context(), &agentv1.StatBlobRequest{Sha256: sha})
	if err != nil || !st.GetExists() || st.GetSize() != size {
		t.Errorf("StatBlob after = %v, %v", st, err)
	}
	if parts := partFiles(t, a.blobDir); len(parts) != 0 {
		t.Errorf("left behind %q", parts)
	}

	// A file module installs the blob, streaming progress.
	run := mustRun(t, a.client, fileReq(false, &agentv1.FileModule{
		Path: "/usr/local/bin/kubelet", Source: &agentv1.FileModule_BlobSha256{BlobSha256: sha}, Mode: 0o755, MakeParents: true,
	}))
	if run.result.GetError() != "" || !run.result.GetChanged() || len(run.progress) == 0 ||
		run.progress[len(run.progress)-1].GetDone() != size {
		t.Errorf("install blob: result %v, progress %v", run.result, run.progress)
	}
	got, err := os.ReadFile(filepath.Join(a.root, "/usr/local/bin/kubelet"))
	if err != nil || hexSHA(got) != sha {
		t.Errorf("installed content differs: %v", err)
	}

	// A blob that was never uploaded.
	_, err = runModule(t, a.client, fileReq(true, &agentv1.FileModule{
		Path: "/x", Source: &agentv1.FileModule_BlobSha256{BlobSha256: hexSHA([]byte("never"))},
	}))
	wantCode(t, err, codes.FailedPrecondition, "blob not uploaded")
}

func TestPutBlobBrokenStream(t *testing.T) {
	a := newTestAgent(t)
	data := make([]byte, 2*agentv1.BlobChunkSize)
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := a.client.PutBlob(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Header{
		Header: &agentv1.BlobHeader{Sha256: hexSHA(data), Size: int64(len(data))},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Data{Data: data[:1000]}}); err != nil {
		t.Fatal(err)
	}
	// Wait for the upload to start, then break it.
	deadline := time.Now().Add(5 * time.Second)
	for len(partFiles(t, a.blobDir)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no .part file appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for len(partFiles(t, a.blobDir)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("left behind %q", partFiles(t, a.blobDir))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInvalidRequests(t *testing.T) {
	a := newTestAgent(t)
	tests := []struct {
		name string
		req  *agentv1.RunModuleRequest
		msg  string
	}{
		{"no module", &agentv1.RunModuleRequest{}, "no module set"},
		{"empty argv", commandReq(&agentv1.CommandModule{}), "argv is empty"},
		{"relative creates", commandReq(&agentv1.CommandModule{Argv: []string{"true"}, Creates: "x"}), "not an absolute path"},
		{"relative file", fileReq(false, &agentv1.FileModule{Path: "etc/x"}), "not an absolute, clean file path"},
		{"traversing blob", fileReq(false, &agentv1.FileModule{
			Path: "/x", Source: &agentv1.FileModule_BlobSha256{BlobSha256: "../../../etc/shadow"},
		}), "not a lowercase hex sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runModule(t, a.client, tt.req)
			wantCode(t, err, codes.InvalidArgument, tt.msg)
		})
	}

	t.Run("stat bad sha", func(t *testing.T) {
		_, err := a.client.StatBlob(t.Context(), &agentv1.StatBlobRequest{Sha256: "../blobs"})
		wantCode(t, err, codes.InvalidArgument, "not 64 lowercase hex digits")
	})
	t.Run("put bad sha", func(t *testing.T) {
		_, err := putBlob(t.Context(), a.client, strings.Repeat("A", 64), 1, []byte("x"), 1)
		wantCode(t, err, codes.InvalidArgument, "not 64 lowercase hex digits")
	})
	t.Run("put data first", func(t *testing.T) {
		stream, err := a.client.PutBlob(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&agentv1.PutBlobRequest{Msg: &agentv1.PutBlobRequest_Data{Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		_, err = stream.CloseAndRecv()
		wantCode(t, err, codes.InvalidArgument, "first PutBlob message must be the header")
	})
}
