// Package systemdtest runs a fake systemd on a private D-Bus system bus, for
// tests of the agent's D-Bus code on hosts where systemd is not PID 1.
//
// It starts dbus-daemon on a socket in a temporary directory, points
// DBUS_SYSTEM_BUS_ADDRESS at it for the test, and serves the few systemd
// manager calls the agent makes: ListUnitsByNames and the SystemState
// property. Tests that use it skip when dbus-daemon is not installed.
package systemdtest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// Unit is the state the fake systemd reports for a unit.
type Unit struct {
	Description string
	LoadState   string
	ActiveState string
	SubState    string
}

const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`

// Start runs dbus-daemon and a fake systemd that knows units (any other unit
// is "not-found", as systemd reports it), and sets DBUS_SYSTEM_BUS_ADDRESS
// for the rest of the test. It skips the test when dbus-daemon is missing.
func Start(t *testing.T, units map[string]Unit) {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed")
	}
	dir := t.TempDir()
	socket := filepath.Join(dir, "system_bus_socket")
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, []byte(strings.Replace(busConfig, "SOCKET", socket, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, daemon, "--config-file="+cfg, "--nofork", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	// The daemon prints its address once it listens.
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read dbus-daemon address: %v", err)
	}
	addr = strings.TrimSpace(addr)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)

	conn, err := dbus.Dial(addr)
	if err != nil {
		t.Fatalf("dial fake bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Auth(nil); err != nil {
		t.Fatalf("authenticate on fake bus: %v", err)
	}
	if err := conn.Hello(); err != nil {
		t.Fatalf("hello on fake bus: %v", err)
	}
	const path = dbus.ObjectPath("/org/freedesktop/systemd1")
	const iface = "org.freedesktop.systemd1.Manager"
	if err := conn.Export(manager{units}, path, iface); err != nil {
		t.Fatal(err)
	}
	if _, err := prop.Export(conn, path, prop.Map{iface: {
		"SystemState": {Value: "running", Emit: prop.EmitFalse},
	}}); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v, %v", reply, err)
	}
	waitForName(t, addr)
}

// waitForName returns once the name is visible to other connections.
func waitForName(t *testing.T, addr string) {
	t.Helper()
	conn, err := dbus.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Auth(nil); err != nil {
		t.Fatal(err)
	}
	if err := conn.Hello(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var owner string
		err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, "org.freedesktop.systemd1").Store(&owner)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake systemd never appeared: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// manager serves org.freedesktop.systemd1.Manager methods.
type manager struct{ units map[string]Unit }

// unitStatus is the (ssssssouso) tuple ListUnitsByNames returns.
type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          dbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       dbus.ObjectPath
}

func (m manager) ListUnitsByNames(names []string) ([]unitStatus, *dbus.Error) {
	out := make([]unitStatus, 0, len(names))
	for _, n := range names {
		u, ok := m.units[n]
		if !ok {
			u = Unit{LoadState: "not-found", ActiveState: "inactive", SubState: "dead"}
		}
		out = append(out, unitStatus{
			Name: n, Description: u.Description, LoadState: u.LoadState,
			ActiveState: u.ActiveState, SubState: u.SubState,
			Path: "/org/freedesktop/systemd1/unit/x", JobPath: "/",
		})
	}
	return out, nil
}
