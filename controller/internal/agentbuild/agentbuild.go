// Package agentbuild builds kthw-agent (and kthw-controller) binaries for
// controller tests, once per test binary and variant, the same way
// `make build` does (CGO_ENABLED=0).
package agentbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Variant is a build of the agent.
type Variant struct {
	// Version stamped into main.version.
	Version string
	// APIVersion, when set, overrides the API version the agent reports.
	APIVersion string
	// Package is the main package to build; default ./agent/cmd/kthw-agent.
	Package string
}

// Controller returns a kthw-controller binary with the agent built beside
// it, as `make build` lays them out.
func Controller(t testing.TB) string {
	t.Helper()
	agent := Build(t, Variant{Version: "e2e"})
	ctl := Build(t, Variant{Version: "e2e", Package: "./controller/cmd/kthw-controller"})
	beside := filepath.Join(filepath.Dir(ctl), "ctl")
	mu.Lock()
	defer mu.Unlock()
	if err := os.MkdirAll(beside, 0o755); err != nil {
		t.Fatalf("agentbuild: %v", err)
	}
	if _, err := os.Stat(filepath.Join(beside, "kthw-controller")); err != nil {
		for src, name := range map[string]string{ctl: "kthw-controller", agent: "kthw-agent"} {
			if err := os.Link(src, filepath.Join(beside, name)); err != nil {
				t.Fatalf("agentbuild: %v", err)
			}
		}
	}
	return filepath.Join(beside, "kthw-controller")
}

var (
	mu     sync.Mutex
	dir    string
	builds = map[Variant]string{}
)

// Build returns the path of an agent binary built for v. The binaries live
// in one temporary directory removed by Cleanup (call it from TestMain).
func Build(t testing.TB, v Variant) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := builds[v]; ok {
		return p
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "kthw-agentbuild-")
		if err != nil {
			t.Fatalf("agentbuild: %v", err)
		}
		dir = d
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("agentbuild: %v", err)
	}
	out := filepath.Join(dir, fmt.Sprintf("kthw-agent-%d", len(builds)))
	ldflags := "-X main.version=" + v.Version
	if v.APIVersion != "" {
		ldflags += " -X github.com/kthw/kthw/proto/kthw/agent/v1.APIVersion=" + v.APIVersion
	}
	pkg := v.Package
	if pkg == "" {
		pkg = "./agent/cmd/kthw-agent"
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agentbuild: go build: %v\n%s", err, b)
	}
	builds[v] = out
	return out
}

// Cleanup removes every binary built; later Builds start afresh.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	dir = ""
	builds = map[Variant]string{}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the kthw module")
	}
	return filepath.Dir(mod), nil
}
