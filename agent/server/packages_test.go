package server

import (
	"os/exec"
	"strings"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func packagesReq(checkOnly bool, m *agentv1.PackagesModule) *agentv1.RunModuleRequest {
	return &agentv1.RunModuleRequest{Name: "test", CheckOnly: checkOnly, Module: &agentv1.RunModuleRequest_Packages{Packages: m}}
}

// The agent detects the package manager under its root: the test's root
// has none.
func TestRunPackagesDetects(t *testing.T) {
	a := newTestAgent(t)
	run := mustRun(t, a.client, packagesReq(true, &agentv1.PackagesModule{Packages: []*agentv1.Package{{Name: "jq"}}}))
	if msg := run.result.GetError(); !strings.Contains(msg, "detect package manager under "+a.root+": none of apt, zypper, dnf found") {
		t.Fatalf("result error = %q", msg)
	}
	// The facts agree: no package manager.
	if f, err := a.client.Facts(t.Context(), &agentv1.FactsRequest{}); err != nil || f.GetPackageManager() != "" {
		t.Errorf("facts package manager = %q, %v; want none", f.GetPackageManager(), err)
	}
}

// With apt named, Check queries the host's real dpkg (read-only).
func TestRunPackagesCheckWithHostApt(t *testing.T) {
	for _, tool := range []string{"dpkg-query", "apt-mark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: not a Debian host", tool)
		}
	}
	a := newTestAgent(t)
	run := mustRun(t, a.client, packagesReq(true, &agentv1.PackagesModule{Manager: "apt", Packages: []*agentv1.Package{{Name: "dpkg"}}}))
	if res := run.result; res.GetError() != "" || res.GetChanged() {
		t.Fatalf("Check dpkg = %+v; want unchanged", res)
	}
	if infos := run.lines(agentv1.LogLine_STREAM_INFO); !hasLinePrefix(infos, "running: dpkg-query -W") {
		t.Errorf("info lines %q do not show the command", infos)
	}
	run = mustRun(t, a.client, packagesReq(true, &agentv1.PackagesModule{Manager: "apt", Packages: []*agentv1.Package{{Name: "kthw-no-such-package"}}}))
	if res := run.result; res.GetError() != "" || !res.GetChanged() || res.GetDiff() != "install kthw-no-such-package (newest)\n" {
		t.Fatalf("Check missing package = %+v", res)
	}
}

func hasLinePrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
