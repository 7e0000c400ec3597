package pvesim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// tokenClient is a go-proxmox client with the simulator's token and CA.
func tokenClient(t *testing.T, sim *pvesim.Sim, opts ...proxmox.Option) *proxmox.Client {
	t.Helper()
	base := []proxmox.Option{
		proxmox.WithAPIToken(sim.TokenID, sim.TokenSecret),
		proxmox.WithRootCAs(sim.RootCAs),
		proxmox.WithTimeout(10 * time.Second),
	}
	return proxmox.NewClient(sim.URL, append(base, opts...)...)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wait waits for a task with go-proxmox's Wait (which returns nil even if
// the task failed) and returns it.
func wait(t *testing.T, ctx context.Context, task *proxmox.Task) *proxmox.Task {
	t.Helper()
	if task == nil {
		t.Fatal("nil task")
	}
	if err := task.Wait(ctx, 5*time.Millisecond, 10*time.Second); err != nil {
		t.Fatalf("wait %s: %v", task.UPID, err)
	}
	return task
}

// mustSucceed waits for a task and fails the test unless it succeeded.
func mustSucceed(t *testing.T, ctx context.Context, task *proxmox.Task, err error) *proxmox.Task {
	t.Helper()
	if err != nil {
		t.Fatalf("start task: %v", err)
	}
	wait(t, ctx, task)
	if !task.IsSuccessful {
		t.Fatalf("task %s: exit status %q", task.UPID, task.ExitStatus)
	}
	return task
}

// raw is one HTTP exchange with the simulator outside go-proxmox.
type raw struct {
	code   int
	status string // "500 VM 100 is running - destroy failed"
	body   []byte
	header http.Header
	close  bool // the server closes the connection
}

func (r raw) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

// data returns the "data" member.
func (r raw) data(t *testing.T) any {
	t.Helper()
	return r.json(t)["data"]
}

// do sends a request with the token; body may be url.Values-encoded
// (contentType form) or JSON.
func do(t *testing.T, sim *pvesim.Sim, method, path, contentType, body string, hdr ...string) raw {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, sim.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "PVEAPIToken="+sim.TokenID+"="+sim.TokenSecret)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := sim.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return raw{code: res.StatusCode, status: res.Status, body: bytes.TrimSpace(b), header: res.Header, close: res.Close}
}

func get(t *testing.T, sim *pvesim.Sim, path string) raw {
	t.Helper()
	return do(t, sim, http.MethodGet, path, "", "")
}

// jsonType names the JSON type of a decoded value.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "?"
}

// checkTypes checks the JSON type of fields of obj; want "absent" for
// fields that must be left out.
func checkTypes(t *testing.T, what string, obj map[string]any, want map[string]string) {
	t.Helper()
	for k, typ := range want {
		v, ok := obj[k]
		switch {
		case typ == "absent" && ok:
			t.Errorf("%s: %q present (%v), want absent", what, k, v)
		case typ == "absent":
		case !ok:
			t.Errorf("%s: %q missing, want %s", what, k, typ)
		case jsonType(v) != typ:
			t.Errorf("%s: %q is %s (%v), want %s", what, k, jsonType(v), v, typ)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clonedVM clones the test template to VMID 100 named name and sets its
// ipconfig0; the VM is left stopped.
func clonedVM(t *testing.T, c *proxmox.Client, name, ipconfig string) *proxmox.VirtualMachine {
	t.Helper()
	ctx := ctxT(t)
	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := node.VirtualMachine(ctx, pvesim.TestTemplateID)
	if err != nil {
		t.Fatal(err)
	}
	_, task, err := tmpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 100, Name: name})
	mustSucceed(t, ctx, task, err)
	vm, err := node.VirtualMachine(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	task, err = vm.Config(ctx, proxmox.VirtualMachineOption{Name: "ipconfig0", Value: ipconfig})
	mustSucceed(t, ctx, task, err)
	return vm
}
