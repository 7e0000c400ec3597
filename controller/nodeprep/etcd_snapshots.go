package nodeprep

import (
	"fmt"
	"strings"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/phase"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Units of the scheduled etcd snapshots.
const (
	EtcdSnapshotService = "kthw-etcd-snapshot.service"
	EtcdSnapshotTimer   = "kthw-etcd-snapshot.timer"
)

// EtcdSnapshotSteps returns the steps that schedule node-local etcd
// snapshots on the control-plane nodes: a oneshot service that runs
// `kthw-agent etcd snapshot` (agentPath is the agent binary on the nodes)
// and a timer, both through the systemd unit module. The service does
// nothing on a node without kubeadm's etcd manifest.
func EtcdSnapshotSteps(s *config.EtcdSnapshots, agentPath string) []phase.Step {
	if s == nil {
		return nil
	}
	cp := func(n *phase.Node) bool { return n.Role == config.RoleControlPlane }
	service := phase.Module("etcd/snapshot-service", func(*phase.Node) (*agentv1.RunModuleRequest, error) {
		return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_SystemdUnit{SystemdUnit: &agentv1.SystemdUnitModule{
			Name: EtcdSnapshotService, Content: EtcdSnapshotServiceUnit(s, agentPath),
		}}}, nil
	})
	service.When = cp
	enabled := true
	timer := phase.Module("etcd/snapshot-timer", func(*phase.Node) (*agentv1.RunModuleRequest, error) {
		return &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_SystemdUnit{SystemdUnit: &agentv1.SystemdUnitModule{
			Name: EtcdSnapshotTimer, Content: EtcdSnapshotTimerUnit(s), Enabled: &enabled,
			State: agentv1.SystemdUnitModule_STATE_RESTARTED_ON_CHANGE,
		}}}, nil
	})
	timer.When = cp
	return []phase.Step{service, timer}
}

// EtcdSnapshotServiceUnit renders the snapshot service.
func EtcdSnapshotServiceUnit(s *config.EtcdSnapshots, agentPath string) string {
	var b strings.Builder
	b.WriteString("# Managed by kthw; local changes are overwritten.\n")
	b.WriteString("[Unit]\n")
	b.WriteString("Description=kthw: save a snapshot of this node's etcd (kubeadm stacked etcd)\n")
	b.WriteString("Documentation=https://github.com/kthw/kthw/blob/main/docs/etcd.md\n")
	b.WriteString("ConditionPathExists=/etc/kubernetes/manifests/etcd.yaml\n")
	b.WriteString("\n[Service]\n")
	b.WriteString("Type=oneshot\n")
	fmt.Fprintf(&b, "ExecStart=%s etcd snapshot --dir %s --keep %d\n", agentPath, s.Dir, s.Keep)
	b.WriteString("UMask=0077\n")
	b.WriteString("Nice=10\n")
	b.WriteString("IOSchedulingClass=best-effort\n")
	b.WriteString("IOSchedulingPriority=7\n")
	b.WriteString("TimeoutStartSec=30min\n")
	return b.String()
}

// EtcdSnapshotTimerUnit renders the snapshot timer.
func EtcdSnapshotTimerUnit(s *config.EtcdSnapshots) string {
	var b strings.Builder
	b.WriteString("# Managed by kthw; local changes are overwritten.\n")
	b.WriteString("[Unit]\n")
	b.WriteString("Description=kthw: scheduled etcd snapshots\n")
	b.WriteString("Documentation=https://github.com/kthw/kthw/blob/main/docs/etcd.md\n")
	b.WriteString("\n[Timer]\n")
	fmt.Fprintf(&b, "OnCalendar=%s\n", s.Schedule)
	b.WriteString("Persistent=true\n")
	b.WriteString("RandomizedDelaySec=60\n")
	fmt.Fprintf(&b, "Unit=%s\n", EtcdSnapshotService)
	b.WriteString("\n[Install]\n")
	b.WriteString("WantedBy=timers.target\n")
	return b.String()
}
