package proxmox

import (
	"errors"
	"fmt"
	"net/url"
	"testing"

	pve "github.com/luthermonson/go-proxmox"
)

func TestErrorClasses(t *testing.T) {
	e := errors.New
	for _, tt := range []struct {
		err                                   error
		notExist, exists, lock, ambig, unauth bool
	}{
		{err: e("500 Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist"), notExist: true},
		{err: e(`bad request: 400 Parameter verification failed. - {"vmid":"VM 101 already exists"}`), exists: true},
		{err: e("500 unable to create VM 105: config file already exists"), exists: true},
		{err: &TaskError{Exit: "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"}, lock: true},
		{err: &TaskError{Exit: "clone failed: cfs-lock 'storage-local-lvm' error: got lock request timeout"}, lock: true},
		{err: e("500 VM is locked (clone)"), lock: true},
		{err: &url.Error{Op: "Post", URL: "https://pve/api2/json", Err: e("context deadline exceeded")}, ambig: true},
		{err: fmt.Errorf("x: %w", pve.ErrNotAuthorized), unauth: true},
		{err: e("500 simulated failure")},
	} {
		if isNotExist(tt.err) != tt.notExist || isAlreadyExists(tt.err) != tt.exists || isLockContention(tt.err) != tt.lock ||
			isAmbiguous(tt.err) != tt.ambig || isUnauthorized(tt.err) != tt.unauth {
			t.Errorf("%v: notExist %v exists %v lock %v ambiguous %v unauthorized %v", tt.err,
				isNotExist(tt.err), isAlreadyExists(tt.err), isLockContention(tt.err), isAmbiguous(tt.err), isUnauthorized(tt.err))
		}
	}
	for exit, ok := range map[string]bool{"OK": true, "WARNINGS: 1": true, "WARNINGS: 12": true, "": false, "clone failed: x": false, "unexpected status": false} {
		if taskSucceeded(exit) != ok {
			t.Errorf("taskSucceeded(%q) = %v", exit, !ok)
		}
	}
	if !agentNotConfigured(e("500 No QEMU guest agent configured")) || agentNotConfigured(e("500 QEMU guest agent is not running")) {
		t.Error("agentNotConfigured")
	}
	if !agentUnsupported(e("501 Not Implemented")) || !agentUnsupported(e("500 Agent error: The command guest-file-open has been disabled for this instance")) ||
		agentUnsupported(e("500 Agent error: Failed to open file '/var/lib/cloud/instance/boot-finished': No such file or directory")) {
		t.Error("agentUnsupported")
	}
	if err := authError("clone", pve.ErrNotAuthorized); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("authError does not wrap ErrNotAuthorized: %v", err)
	}
}
