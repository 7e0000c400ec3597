package pvesim

import (
	"strings"
	"time"
)

// Faults are the fault-injection knobs. Counters count down as the faults
// fire. Set them with Server.SetFaults or Server.UpdateFaults, over HTTP with
// PUT /pvesim/faults (a JSON Faults), or with kthw-pvesim's flags.
type Faults struct {
	// CloneLockTimeouts fails the next N clone tasks the way a busy
	// config lock does: exit status "can't lock file
	// '/var/lock/qemu-server/lock-<source>.conf' - got timeout". No VM is
	// created and the new VMID stays free.
	CloneLockTimeouts int `json:"clone_lock_timeouts,omitempty"`
	// StorageLockTimeouts fails the next N clone tasks half-way: "clone
	// failed: cfs-lock 'storage-<id>' error: got lock request timeout".
	// The half-made VM is removed again.
	StorageLockTimeouts int `json:"storage_lock_timeouts,omitempty"`
	// StealNextIDs makes another client take the next N VMIDs that
	// nextid hands out or confirms free (nextid?vmid=N): a foreign VM
	// with that ID appears right after the answer, so a clone to it fails
	// with "unable to create VM N: config file already exists".
	StealNextIDs int `json:"steal_next_ids,omitempty"`
	// TaskWarnings ends the next N tasks of a type ("qmclone",
	// "qmstart", ...) with "WARNINGS: 1" (a success) and a warning in
	// the log.
	TaskWarnings map[string]int `json:"task_warnings,omitempty"`
	// TaskFailures fails the next N tasks of a type with TaskFailureText
	// (default "simulated failure").
	TaskFailures    map[string]int `json:"task_failures,omitempty"`
	TaskFailureText string         `json:"task_failure_text,omitempty"`
	// AgentMissing makes no guest agent answer ("QEMU guest agent is not
	// running"); AgentMissingVMs does so for some VMs only.
	AgentMissing    bool  `json:"agent_missing,omitempty"`
	AgentMissingVMs []int `json:"agent_missing_vms,omitempty"`
	// AgentFileReadBlocked makes agent/file-read fail the way a guest
	// agent started with --block-rpcs=guest-file-open does: 500 "Agent
	// error: Command guest-file-open has been disabled".
	AgentFileReadBlocked bool `json:"agent_file_read_blocked,omitempty"`
	// AgentDelay, when set, replaces Config.AgentDelay for VMs started
	// from now on (a slow guest). Nanoseconds in JSON.
	AgentDelay time.Duration `json:"agent_delay,omitempty"`
	// ConsoleNoKeys makes guests started from now on print no SSH host
	// keys on their serial console (an image whose cloud-init does not
	// run cc_keys_to_console).
	ConsoleNoKeys bool `json:"console_no_keys,omitempty"`
	// Forbidden answers 403 for matching requests.
	Forbidden []ForbidRule `json:"forbidden,omitempty"`
	// OfflineNodes makes requests for a node's paths fail the way
	// pveproxy does when it cannot reach the node: 595 "Errors during
	// connection establishment, proxy handshake: No route to host" or 596
	// "Broken pipe" (the value is the code; anything else means 596). The
	// node shows as offline in /nodes and /cluster/status.
	OfflineNodes map[string]int `json:"offline_nodes,omitempty"`
	// RequestErrors answer matching requests with a fixed error.
	RequestErrors []RequestError `json:"request_errors,omitempty"`
}

// ForbidRule answers 403 "Permission check failed (<Perm>)" to requests whose
// method matches (empty: any) and whose path below /api2/json starts with
// Path. Perm defaults to what Proxmox would check, e.g. "/vms/101,
// VM.PowerMgmt".
type ForbidRule struct {
	Method string `json:"method,omitempty"`
	Path   string `json:"path"`
	Perm   string `json:"perm,omitempty"`
}

// RequestError answers the next Count matching requests (0: every one) with
// Status (default 500) and Message (in the status line). A spent entry
// shows Count -1.
type RequestError struct {
	Method  string `json:"method,omitempty"`
	Path    string `json:"path"`
	Count   int    `json:"count,omitempty"`
	Status  int    `json:"status,omitempty"`
	Message string `json:"message"`
}

// FaultStats counts the faults that fired, by kind ("clone_lock_timeout",
// "storage_lock_timeout", "stolen_vmid", "task_warning", "task_failure",
// "forbidden", "offline_node", "request_error").
type FaultStats map[string]int

func (f *Faults) clone() Faults {
	c := *f
	c.TaskWarnings = cloneCounts(f.TaskWarnings)
	c.TaskFailures = cloneCounts(f.TaskFailures)
	c.AgentMissingVMs = append([]int(nil), f.AgentMissingVMs...)
	c.Forbidden = append([]ForbidRule(nil), f.Forbidden...)
	c.RequestErrors = append([]RequestError(nil), f.RequestErrors...)
	c.OfflineNodes = cloneCounts(f.OfflineNodes)
	return c
}

func cloneCounts(m map[string]int) map[string]int {
	if m == nil {
		return nil
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// take decrements *n when positive and reports whether it fired.
func take(n *int) bool {
	if *n > 0 {
		*n--
		return true
	}
	return false
}

func takeMap(m map[string]int, k string) bool {
	if m[k] > 0 {
		m[k]--
		return true
	}
	return false
}

func (f *Faults) agentMissing(vmid int) bool {
	if f.AgentMissing {
		return true
	}
	for _, id := range f.AgentMissingVMs {
		if id == vmid {
			return true
		}
	}
	return false
}

// forbidden returns the rule that matches, if any.
func (f *Faults) forbidden(method, path string) (ForbidRule, bool) {
	for _, r := range f.Forbidden {
		if (r.Method == "" || strings.EqualFold(r.Method, method)) && strings.HasPrefix(path, r.Path) {
			return r, true
		}
	}
	return ForbidRule{}, false
}

// requestError returns the error to answer, counting it down.
func (f *Faults) requestError(method, path string) (RequestError, bool) {
	for i := range f.RequestErrors {
		r := &f.RequestErrors[i]
		if (r.Method != "" && !strings.EqualFold(r.Method, method)) || !strings.HasPrefix(path, r.Path) {
			continue
		}
		if r.Count < 0 {
			continue
		}
		out := *r
		if r.Count > 0 {
			r.Count--
			if r.Count == 0 {
				r.Count = -1 // spent
			}
		}
		return out, true
	}
	return RequestError{}, false
}
