package proxmox

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	pve "github.com/luthermonson/go-proxmox"
)

// Sentinel errors; the returned errors wrap them with the details.
var (
	// ErrTemplateMissing: no VM template of the configured name exists.
	ErrTemplateMissing = errors.New("VM template not found")
	// ErrTemplateUnfit: the template lacks what nodes need (a cloud-init
	// drive, the guest agent).
	ErrTemplateUnfit = errors.New("VM template unfit for kthw")
	// ErrNotAuthorized: Proxmox refused the credentials or a privilege
	// (HTTP 401/403).
	ErrNotAuthorized = errors.New("not authorized by Proxmox")
	// ErrNodeUnknown: the configured Proxmox node is not in the cluster.
	ErrNodeUnknown = errors.New("unknown Proxmox node")
	// ErrDuplicateVM: two VMs claim to be the same node of a cluster.
	ErrDuplicateVM = errors.New("duplicate VM")
	// ErrBoot: a started VM did not come up (guest agent, address,
	// cloud-init).
	ErrBoot = errors.New("VM did not come up")
)

// TaskError is a Proxmox task that ended with an error exit status.
type TaskError struct {
	// UPID identifies the task.
	UPID string
	// Type is the task type, e.g. qmclone, qmstart.
	Type string
	// Exit is the task's exit status: the error text.
	Exit string
}

func (e *TaskError) Error() string {
	return fmt.Sprintf("task %s failed: %s", e.Type, e.Exit)
}

// taskSucceeded reports whether a stopped task's exit status is success:
// "OK", or "WARNINGS: n" (the task did its job and logged warnings).
func taskSucceeded(exit string) bool {
	return exit == "OK" || strings.HasPrefix(exit, "WARNINGS:")
}

// msgOf is the text to classify an error by: go-proxmox puts Proxmox's
// message in the error text (the status line for 500, the errors map for 400)
// and task failures carry it as the exit status.
func msgOf(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// isNotExist reports whether err says the VM does not exist. Proxmox
// answers with a 500 whose status line is "Configuration file
// 'nodes/pve1/qemu-server/101.conf' does not exist"; go-proxmox does not map
// it to its ErrNotFound.
func isNotExist(err error) bool {
	m := msgOf(err)
	return strings.Contains(m, "does not exist") || strings.Contains(m, "unable to find configuration file") ||
		errors.Is(err, pve.ErrNotFound)
}

// isAlreadyExists reports whether err says the VMID is taken ("unable to
// create VM 105: config file already exists", "VM 105 already exists").
func isAlreadyExists(err error) bool {
	return strings.Contains(msgOf(err), "already exists")
}

// isLockContention reports whether err is a lock that may free up: a config
// or storage lock timeout, a VM locked by another operation.
func isLockContention(err error) bool {
	m := msgOf(err)
	for _, s := range []string{"can't lock file", "got timeout", "lock request timeout", "cfs-lock", "is locked", "trying to acquire lock"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// isAmbiguous reports whether a request may or may not have been carried
// out: the connection failed or timed out after it was sent.
func isAmbiguous(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// isUnauthorized reports a 401/403.
func isUnauthorized(err error) bool {
	return errors.Is(err, pve.ErrNotAuthorized) || errors.Is(err, ErrNotAuthorized)
}

// authError turns go-proxmox's bare "not authorized to access endpoint"
// into a message that says what to check.
func authError(what string, err error) error {
	if isUnauthorized(err) {
		return fmt.Errorf("%s: %w: check the token (or user) and its privileges; a token with privilege separation needs its own permissions on /vms, /storage and /nodes", what, ErrNotAuthorized)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// agentNotConfigured reports that the VM has no guest agent device.
func agentNotConfigured(err error) bool {
	return strings.Contains(msgOf(err), "No QEMU guest agent configured")
}

// agentUnsupported reports that the API or the guest agent refuses a
// command (an older Proxmox, a guest agent that blocks file access).
func agentUnsupported(err error) bool {
	m := strings.ToLower(msgOf(err))
	return strings.HasPrefix(m, "501") || strings.Contains(m, "not implemented") ||
		strings.Contains(m, "has been disabled") || strings.Contains(m, "command not found") ||
		strings.Contains(m, "unsupported command")
}
