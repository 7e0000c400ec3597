package server

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kthw/kthw/internal/etcdtest"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// readAll reads a node file through ReadFile and returns the data and the
// trailer.
func readAll(t *testing.T, c agentv1.AgentServiceClient, path string) ([]byte, *agentv1.ReadFileHeader, *agentv1.ReadFileTrailer, error) {
	t.Helper()
	stream, err := c.ReadFile(t.Context(), &agentv1.ReadFileRequest{Path: path})
	if err != nil {
		return nil, nil, nil, err
	}
	var (
		data []byte
		hdr  *agentv1.ReadFileHeader
		tr   *agentv1.ReadFileTrailer
	)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return data, hdr, tr, nil
		}
		if err != nil {
			return nil, nil, nil, err
		}
		switch {
		case msg.GetHeader() != nil:
			hdr = msg.GetHeader()
		case msg.GetTrailer() != nil:
			tr = msg.GetTrailer()
		default:
			if len(msg.GetData()) > agentv1.BlobChunkSize {
				t.Errorf("chunk of %d bytes", len(msg.GetData()))
			}
			data = append(data, msg.GetData()...)
		}
	}
}

func TestReadFile(t *testing.T) {
	a := newTestAgent(t)
	content := make([]byte, 3*agentv1.BlobChunkSize+12345)
	rand.Read(content)
	writeFile(t, filepath.Join(a.root, "/var/lib/x/big"), string(content), 0o640)
	data, hdr, tr, err := readAll(t, a.client, "/var/lib/x/big")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, content) || hdr.GetSize() != int64(len(content)) || hdr.GetMode() != 0o640 ||
		tr.GetSha256() != hexSHA(content) || tr.GetSize() != int64(len(content)) {
		t.Fatalf("got %d bytes, header %v, trailer %v", len(data), hdr, tr)
	}
	writeFile(t, filepath.Join(a.root, "/empty"), "", 0o600)
	if data, _, tr, err := readAll(t, a.client, "/empty"); err != nil || len(data) != 0 || tr.GetSha256() != hexSHA(nil) {
		t.Errorf("empty file: %v %v", tr, err)
	}
	for path, code := range map[string]codes.Code{
		"/var/lib/x":     codes.InvalidArgument, // a directory
		"/missing":       codes.NotFound,
		"relative":       codes.InvalidArgument,
		"/var/lib/../x/": codes.InvalidArgument,
	} {
		if _, _, _, err := readAll(t, a.client, path); status.Code(err) != code {
			t.Errorf("%s: %v, want %v", path, err, code)
		}
	}
}

// TestEtcdSnapshotModule runs the etcd snapshot module through the gRPC
// service against a real etcd whose kubeadm-style PKI lies under the
// agent's root, lists the snapshot and reads it back.
func TestEtcdSnapshotModule(t *testing.T) {
	a := newTestAgent(t)
	p, err := etcdtest.NewPKI(a.root, "cp-1")
	if err != nil {
		t.Fatal(err)
	}
	m := etcdtest.Start(t, p, etcdtest.Options{Name: "cp-1"})
	if _, err := etcdtest.Fill(t.Context(), m.MustClient(t), "/registry/x/", 30, 100<<10); err != nil {
		t.Fatal(err)
	}
	req := &agentv1.RunModuleRequest{Name: "etcd snapshot", Module: &agentv1.RunModuleRequest_EtcdSnapshot{
		EtcdSnapshot: &agentv1.EtcdSnapshotModule{Endpoint: &agentv1.EtcdEndpoint{Url: m.ClientURL}, Keep: 3},
	}}
	check := &agentv1.RunModuleRequest{CheckOnly: true, Module: req.Module}
	run, err := runModule(t, a.client, check)
	if err != nil || !run.result.GetChanged() || !strings.Contains(run.result.GetDiff(), "save a snapshot of etcd at "+m.ClientURL) {
		t.Fatalf("check: %v %v", run.result, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(a.root, "/var/lib/kthw/etcd-snapshots")); len(entries) != 0 {
		t.Fatalf("check wrote %v", entries)
	}
	run, err = runModule(t, a.client, req)
	if err != nil || run.result.GetError() != "" {
		t.Fatalf("apply: %v %v", run.result, err)
	}
	man := run.result.GetEtcdSnapshot()
	if man == nil || man.GetMemberName() != "cp-1" || man.GetSize() < 3<<20 {
		t.Fatalf("output %v", man)
	}
	if len(run.progress) < 3 || run.progress[len(run.progress)-1].GetDone() != man.GetSize() {
		t.Errorf("progress events %v", run.progress)
	}
	list, err := a.client.ListEtcdSnapshots(t.Context(), &agentv1.ListEtcdSnapshotsRequest{})
	if err != nil || len(list.GetSnapshots()) != 1 || list.GetSnapshots()[0].GetManifest().GetSha256() != man.GetSha256() {
		t.Fatalf("list %v %v", list, err)
	}
	for _, dir := range []string{"relative", "/var/lib/../x"} {
		if _, err := a.client.ListEtcdSnapshots(t.Context(), &agentv1.ListEtcdSnapshotsRequest{Dir: dir}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("list %q: %v, want InvalidArgument", dir, err)
		}
	}
	data, _, tr, err := readAll(t, a.client, list.GetSnapshots()[0].GetPath())
	if err != nil || tr.GetSha256() != man.GetSha256() || hexSHA(data) != man.GetSha256() {
		t.Fatalf("read back: %v %v", tr, err)
	}

	// A module that ran and failed is a result with an error, not a
	// status.
	bad := &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_EtcdSnapshot{
		EtcdSnapshot: &agentv1.EtcdSnapshotModule{Endpoint: &agentv1.EtcdEndpoint{Url: "https://127.0.0.1:1"}},
	}}
	run, err = runModule(t, a.client, bad)
	if err != nil || !strings.Contains(run.result.GetError(), "connection refused") || run.result.GetEtcdSnapshot() != nil {
		t.Fatalf("bad endpoint: %v %v", run.result, err)
	}
	// A malformed request is refused.
	_, err = runModule(t, a.client, &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_EtcdSnapshot{
		EtcdSnapshot: &agentv1.EtcdSnapshotModule{Dir: "relative"},
	}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("relative dir: %v", err)
	}
}
