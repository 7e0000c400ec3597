package proxmox

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// fakeFileRead answers the guest agent's file-read the way Proxmox does,
// with what a test wants: cloud-init's boot-finished appears after a few
// polls, the host key is there.
type fakeFileRead struct {
	base          http.RoundTripper
	hostKey       string
	mu            sync.Mutex
	bootPolls     int
	finishedAfter int
	unimplemented bool
}

func (f *fakeFileRead) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(r.URL.Path, "/agent/file-read") {
		return f.base.RoundTrip(r)
	}
	file := r.URL.Query().Get("file")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unimplemented {
		return answer(r, 501, "501 Method 'GET /nodes/pve1/qemu/100/agent/file-read' not implemented", ""), nil
	}
	switch file {
	case BootFinishedFile:
		f.bootPolls++
		if f.bootPolls <= f.finishedAfter {
			return answer(r, 500, "500 Agent error: Failed to open file '"+file+"': No such file or directory", ""), nil
		}
		return answer(r, 200, "200 OK", `{"data":{"content":"11.82 - Tue, 01 Jan 2025 00:00:00 +0000 - v. 24.1\n"}}`), nil
	case HostKeyFile:
		b, _ := json.Marshal(map[string]any{"data": map[string]any{"content": f.hostKey}})
		return answer(r, 200, "200 OK", string(b)), nil
	}
	return answer(r, 500, "500 Agent error: Failed to open file '"+file+"': No such file or directory", ""), nil
}

func answer(r *http.Request, code int, status, body string) *http.Response {
	return &http.Response{StatusCode: code, Status: status, Body: io.NopCloser(strings.NewReader(body)),
		Header: http.Header{"Content-Type": {"application/json"}}, Request: r, ProtoMajor: 1, ProtoMinor: 1}
}

func TestHostKeyReadThroughAgent(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	key := strings.TrimSpace(string(testAuthorizedKey(t)))
	fake := &fakeFileRead{hostKey: key + " root@cp-1\n", finishedAfter: 3}
	e.p.o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { fake.base = rt; return fake }
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if n.HostKey != key {
		t.Fatalf("host key %q, want %q (no comment)", n.HostKey, key)
	}
	if fake.bootPolls != 4 {
		t.Fatalf("boot-finished read %d times; want until it appeared (4)", fake.bootPolls)
	}
}

func TestHostKeyUnreadable(t *testing.T) {
	ctx := context.Background()
	// A guest agent that blocks guest-file-* (qemu-ga --block-rpcs): no
	// key, no failure.
	sim := pvesim.Start(t, pvesim.WithFaults(pvesim.Faults{AgentFileReadBlocked: true}))
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil || n.HostKey != "" {
		t.Fatalf("node %+v, %v; want no host key and no error", n, err)
	}
	// An API without file-read (it answers 501): the same.
	e1 := newSimProvider(t, simCluster(t, sim), sim, "")
	fake501 := &fakeFileRead{unimplemented: true}
	e1.p.o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { fake501.base = rt; return fake501 }
	n, err = e1.p.Ensure(ctx, e.spec(t, "worker-2"))
	if err != nil || n.HostKey != "" {
		t.Fatalf("node %+v, %v; want no host key and no error", n, err)
	}
	// A key that does not parse is not pinned either.
	e2 := newSimProvider(t, simCluster(t, sim), sim, "")
	fake := &fakeFileRead{hostKey: "not a key"}
	e2.p.o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { fake.base = rt; return fake }
	n, err = e2.p.Ensure(ctx, e.spec(t, "worker-1"))
	if err != nil || n.HostKey != "" {
		t.Fatalf("node %+v, %v", n, err)
	}
}

func TestCloudInitNeverFinishes(t *testing.T) {
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	c.Provider.Proxmox.BootTimeout = 300 * time.Millisecond
	e := newSimProvider(t, c, sim, "")
	fake := &fakeFileRead{finishedAfter: 1 << 30}
	e.p.o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { fake.base = rt; return fake }
	_, err := e.p.Ensure(context.Background(), e.spec(t, "cp-1"))
	if !errors.Is(err, ErrBoot) || !strings.Contains(err.Error(), "cloud-init has not finished") {
		t.Fatalf("err %v", err)
	}
}
