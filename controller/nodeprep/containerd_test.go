package nodeprep_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/controller/internal/labtest"
	"github.com/kthw/kthw/controller/node"
	"github.com/kthw/kthw/controller/sshx"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

const testImageRef = "kthw.test/hello:v1"

// TestLabContainerd installs Debian's containerd on a lab node, configures
// and verifies it with the containerd module, checks that an unchanged
// second run neither changes nor restarts anything, and then runs a
// container from an image built here, imported with containerd's Go client.
func TestLabContainerd(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	spec := &agentv1.ContainerdModule{
		Packages:      []*agentv1.Package{{Name: "containerd"}},
		SandboxImage:  "registry.k8s.io/pause:3.10",
		SystemdCgroup: true,
		Mirrors: []*agentv1.ContainerdModule_Mirror{
			{Registry: "docker.io", Endpoints: []string{"http://" + c.Lab.Gateway().String() + ":5000"}},
		},
	}
	req := func() *agentv1.RunModuleRequest {
		return &agentv1.RunModuleRequest{Name: "containerd", Module: &agentv1.RunModuleRequest_Containerd{Containerd: spec}}
	}

	r := runModule(t, nd, req())
	if r.err != nil {
		t.Fatalf("containerd module: %v\ndiff:\n%s\nlog:\n%s\njournal:\n%s", r.err, r.res.GetDiff(), strings.Join(r.log, "\n"),
			c.Exec(t, nd, "journalctl -u containerd --no-pager -n 40 -o cat || true"))
	}
	if !r.res.GetChanged() || !strings.Contains(r.res.GetDiff(), "+  SystemdCgroup = true") || !strings.Contains(r.res.GetDiff(), "restart containerd.service") {
		t.Errorf("first run diff:\n%s", r.res.GetDiff())
	}
	if !containsLine(r.log, "installed 1 package(s) with apt") || !containsLine(r.log, "CRI plugin loaded") {
		t.Errorf("no verification in the log:\n%s", strings.Join(r.log, "\n"))
	}
	if got := c.Exec(t, nd, "systemctl is-enabled containerd; systemctl is-active containerd"); got != "enabled\nactive\n" {
		t.Errorf("containerd: %q", got)
	}
	if got := c.Exec(t, nd, "cat /etc/containerd/certs.d/docker.io/hosts.toml"); !strings.Contains(got, `[host."http://`+c.Lab.Gateway().String()+`:5000"]`) {
		t.Errorf("hosts.toml:\n%s", got)
	}
	// containerd itself read the file.
	if got := c.Exec(t, nd, "containerd config dump"); !strings.Contains(got, `sandbox_image = "registry.k8s.io/pause:3.10"`) ||
		!strings.Contains(got, "SystemdCgroup = true") || !strings.Contains(got, `config_path = "/etc/containerd/certs.d"`) {
		t.Errorf("containerd config dump does not show the settings:\n%s", got)
	}

	const show = "systemctl show -p MainPID -p ExecMainStartTimestamp containerd"
	before := c.Exec(t, nd, show)
	r = mustModule(t, nd, req(), false)
	if r.res.GetDiff() != "" {
		t.Errorf("second run diff:\n%s", r.res.GetDiff())
	}
	if after := c.Exec(t, nd, show); after != before {
		t.Errorf("containerd restarted on an unchanged run: %q -> %q", before, after)
	}

	spec.SandboxImage = "registry.k8s.io/pause:3.9"
	r = mustModule(t, nd, req(), true)
	if !strings.Contains(r.res.GetDiff(), "restart containerd.service (its configuration changed)") {
		t.Errorf("third run diff:\n%s", r.res.GetDiff())
	}
	if after := c.Exec(t, nd, show); after == before {
		t.Errorf("containerd was not restarted after a config change: %q", after)
	}

	t.Run("container from a local image", func(t *testing.T) {
		dir := t.TempDir()
		hello := goBuild(t, dir, "hello", "./testdata/hello", "")
		image := buildImage(t, filepath.Join(dir, "hello.tar"), hello, testImageRef)
		ctrrun := goBuild(t, dir, "ctrrun", ".", "testdata/ctrrun")
		ctx := context.Background()
		for src, dst := range map[string]string{image: "/var/tmp/kthw-hello.tar", ctrrun: "/usr/local/bin/kthw-ctrrun"} {
			if _, err := node.PutFile(ctx, nd.Agent, src, &agentv1.FileModule{Path: dst, Mode: 0o755}, nil); err != nil {
				t.Fatal(err)
			}
		}
		// containerd's default overlayfs snapshotter must work: the lab
		// binds /var/lib/containerd from the host instead of keeping it
		// on the node's overlay root, where it cannot mount.
		if fs := strings.TrimSpace(c.Exec(t, nd, "stat -f -c %T /var/lib/containerd")); fs == "overlayfs" {
			t.Fatalf("/var/lib/containerd is on %s in a lab node: the overlayfs snapshotter cannot work there", fs)
		}
		snapshotter := "overlayfs"
		start := time.Now()
		out, err := sshx.Run(ctx, nd.Conn.SSH, "kthw-ctrrun -snapshotter "+snapshotter+" -image /var/tmp/kthw-hello.tar -ref "+testImageRef+" 2>&1", nil)
		t.Logf("import and run: %s\n%s", time.Since(start).Round(time.Millisecond), out)
		if err != nil {
			t.Fatalf("kthw-ctrrun: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "hello from a kthw test image") || !strings.Contains(string(out), "exited 0") {
			t.Errorf("container output:\n%s", out)
		}
		if got := c.Exec(t, nd, "ctr -n kthw-test images ls -q"); !strings.Contains(got, testImageRef) {
			t.Errorf("ctr images ls: %q", got)
		}
	})
}

// containerdUnit is upstream containerd's unit for a binary in
// /usr/local/bin.
const containerdUnit = `[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
`

// TestLabContainerd2 runs containerd 2.x (built here from its module) on a
// lab node: the module detects its version, renders config version 3,
// starts it through systemd and finds its CRI plugin loaded.
func TestLabContainerd2(t *testing.T) {
	c := labtest.Start(t, 1)
	nd := c.Nodes[0]
	bin := goBuild(t, t.TempDir(), "containerd", "github.com/containerd/containerd/v2/cmd/containerd", "testdata/ctrrun",
		"no_btrfs", "no_devmapper", "no_zfs")
	if _, err := node.PutFile(context.Background(), nd.Agent, bin, &agentv1.FileModule{Path: "/usr/local/bin/containerd", Mode: 0o755}, nil); err != nil {
		t.Fatal(err)
	}
	yes := true
	mustModule(t, nd, unitReq(&agentv1.SystemdUnitModule{Name: "containerd.service", Content: containerdUnit, Enabled: &yes}, false), true)

	req := &agentv1.RunModuleRequest{Name: "containerd", Module: &agentv1.RunModuleRequest_Containerd{Containerd: &agentv1.ContainerdModule{
		SandboxImage:  "registry.k8s.io/pause:3.10",
		SystemdCgroup: true,
	}}}
	r := runModule(t, nd, req)
	if r.err != nil {
		t.Fatalf("containerd module: %v\nlog:\n%s\njournal:\n%s", r.err, strings.Join(r.log, "\n"),
			c.Exec(t, nd, "journalctl -u containerd --no-pager -n 40 -o cat || true"))
	}
	for _, want := range []string{"+version = 3", `+[plugins."io.containerd.cri.v1.images".pinned_images]`, "start containerd.service"} {
		if !strings.Contains(r.res.GetDiff(), want) {
			t.Errorf("diff does not have %q:\n%s", want, r.res.GetDiff())
		}
	}
	if !containsLine(r.log, "config version 3") || !containsLine(r.log, "CRI plugin loaded") {
		t.Errorf("log:\n%s", strings.Join(r.log, "\n"))
	}
	dump := c.Exec(t, nd, "containerd config dump 2>/dev/null")
	for _, want := range []string{"sandbox = 'registry.k8s.io/pause:3.10'", "SystemdCgroup = true", "config_path = '/etc/containerd/certs.d'"} {
		if !strings.Contains(dump, want) {
			t.Errorf("containerd config dump does not have %q", want)
		}
	}
	const show = "systemctl show -p MainPID -p ExecMainStartTimestamp containerd"
	before := c.Exec(t, nd, show)
	mustModule(t, nd, req, false)
	if after := c.Exec(t, nd, show); after != before {
		t.Errorf("containerd restarted on an unchanged run: %q -> %q", before, after)
	}
}

func containsLine(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// goBuild builds a static binary of pkg (in module dir modDir, "" for
// kthw's) into dir.
func goBuild(t *testing.T, dir, name, pkg, modDir string, tags ...string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-tags="+strings.Join(tags, ","), "-o", out, pkg)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	t.Logf("go build %s: %s", name, time.Since(start).Round(time.Millisecond))
	return out
}

// buildImage writes an OCI image layout tarball holding one image, ref,
// whose single layer is the binary at /hello and whose entrypoint it is.
func buildImage(t *testing.T, path, binary, ref string) string {
	t.Helper()
	bin, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(bin)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(layer.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}

	blobs := map[string][]byte{}
	descriptor := func(mediaType string, b []byte) map[string]any {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return map[string]any{"mediaType": mediaType, "digest": d, "size": len(b)}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	diffID := sha256.Sum256(layer.Bytes())
	config := mustJSON(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": []string{"/hello"}, "Cmd": []string{"from", "containerd"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	manifest := mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())},
	})
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": ref[strings.LastIndexByte(ref, ':')+1:],
	}
	md["platform"] = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	index := mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := out.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for d, b := range blobs {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
