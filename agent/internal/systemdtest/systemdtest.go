// Package systemdtest runs a fake systemd on a private D-Bus system bus, for
// tests of the agent's D-Bus code on hosts where systemd is not PID 1.
//
// It starts dbus-daemon on a socket in a temporary directory, points
// DBUS_SYSTEM_BUS_ADDRESS at it for the test, and serves the systemd calls
// the agent makes: ListUnitsByNames, the SystemState property, the unit
// properties (LoadState, ActiveState, SubState, UnitFileState,
// NeedDaemonReload), Reload, Enable/Disable/Mask/UnmaskUnitFiles and
// Start/Stop/RestartUnit with their JobRemoved signals. It keeps the state
// those calls change and records every call. Tests that use it skip when
// dbus-daemon is not installed.
package systemdtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// UnitFileState is enabled, disabled, static, masked, ... ("" for no
	// unit file).
	UnitFileState    string
	NeedDaemonReload bool
	// JobResult is what start and restart jobs end in; "" is "done".
	// Anything else leaves the unit failed.
	JobResult string
}

// Systemd is a running fake systemd.
type Systemd struct {
	conn *dbus.Conn

	mu    sync.Mutex
	units map[string]*Unit
	calls []string
	jobs  int
}

// Calls returns the mutating calls made so far, e.g. "StartUnit foo.service"
// or "Reload", in order.
func (s *Systemd) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Unit returns the current state of a unit the fake knows.
func (s *Systemd) Unit(name string) (Unit, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.units[name]
	if !ok {
		return Unit{}, false
	}
	return *u, true
}

// SetUnit replaces the state of a unit.
func (s *Systemd) SetUnit(name string, u Unit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.units[name] = &u
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
func Start(t *testing.T, units map[string]Unit) *Systemd {
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
	sd := &Systemd{conn: conn, units: map[string]*Unit{}}
	for n, u := range units {
		sd.units[n] = &u
	}
	if err := conn.Export(manager{sd}, path, iface); err != nil {
		t.Fatal(err)
	}
	if err := conn.ExportSubtree(unitProps{sd}, "/org/freedesktop/systemd1/unit", "org.freedesktop.DBus.Properties"); err != nil {
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
	return sd
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
type manager struct{ sd *Systemd }

// unitStatus is the (ssssssouso) tuple ListUnitsByNames returns.
type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          dbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       dbus.ObjectPath
}

// unitFileChange is the (sss) tuple of the unit file calls.
type unitFileChange struct{ Type, Filename, Destination string }

// lookup returns the unit's state; an unknown unit is not-found. The
// caller holds sd.mu.
func (s *Systemd) lookup(name string) Unit {
	if u, ok := s.units[name]; ok {
		return *u
	}
	return Unit{LoadState: "not-found", ActiveState: "inactive", SubState: "dead"}
}

// known returns the unit, or a NoSuchUnit error. The caller holds sd.mu.
func (s *Systemd) known(name string) (*Unit, *dbus.Error) {
	u, ok := s.units[name]
	if !ok || u.LoadState == "not-found" {
		return nil, dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not found."})
	}
	return u, nil
}

func (s *Systemd) record(call string) {
	s.calls = append(s.calls, call)
}

func (m manager) ListUnitsByNames(names []string) ([]unitStatus, *dbus.Error) {
	m.sd.mu.Lock()
	defer m.sd.mu.Unlock()
	out := make([]unitStatus, 0, len(names))
	for _, n := range names {
		u := m.sd.lookup(n)
		out = append(out, unitStatus{
			Name: n, Description: u.Description, LoadState: u.LoadState,
			ActiveState: u.ActiveState, SubState: u.SubState,
			Path: "/org/freedesktop/systemd1/unit/x", JobPath: "/",
		})
	}
	return out, nil
}

// Reload loads units the fake knows whose files were not loaded yet.
func (m manager) Reload() *dbus.Error {
	m.sd.mu.Lock()
	defer m.sd.mu.Unlock()
	m.sd.record("Reload")
	for _, u := range m.sd.units {
		u.NeedDaemonReload = false
		if u.LoadState == "not-found" || u.LoadState == "" {
			u.LoadState = "loaded"
			if u.ActiveState == "" {
				u.ActiveState, u.SubState = "inactive", "dead"
			}
			if u.UnitFileState == "" {
				u.UnitFileState = "disabled"
			}
		}
	}
	return nil
}

func (m manager) EnableUnitFiles(files []string, runtime, force bool) (bool, []unitFileChange, *dbus.Error) {
	m.sd.mu.Lock()
	defer m.sd.mu.Unlock()
	m.sd.record("EnableUnitFiles " + strings.Join(files, " "))
	var changes []unitFileChange
	install := true
	for _, f := range files {
		u, ok := m.sd.units[f]
		if !ok {
			return false, nil, dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit file " + f + " does not exist."})
		}
		switch u.UnitFileState {
		case "static":
			install = false
		case "masked":
			return false, nil, dbus.NewError("org.freedesktop.systemd1.UnitMasked", []any{"Unit file " + f + " is masked."})
		case "enabled":
		default:
			u.UnitFileState = "enabled"
			changes = append(changes, unitFileChange{"symlink", "/etc/systemd/system/multi-user.target.wants/" + f, "/etc/systemd/system/" + f})
		}
	}
	return install, changes, nil
}

func (m manager) DisableUnitFiles(files []string, runtime bool) ([]unitFileChange, *dbus.Error) {
	m.sd.mu.Lock()
	defer m.sd.mu.Unlock()
	m.sd.record("DisableUnitFiles " + strings.Join(files, " "))
	var changes []unitFileChange
	for _, f := range files {
		if u, ok := m.sd.units[f]; ok && u.UnitFileState == "enabled" {
			u.UnitFileState = "disabled"
			changes = append(changes, unitFileChange{"unlink", "/etc/systemd/system/multi-user.target.wants/" + f, ""})
		}
	}
	return changes, nil
}

func (m manager) MaskUnitFiles(files []string, runtime, force bool) ([]unitFileChange, *dbus.Error) {
	m.sd.mu.Lock()
	defer m.sd.mu.Unlock()
	m.sd.record("MaskUnitFiles " + strings.Join(files, " "))
	var changes []unitFileChange
	for _, f := range files {
		u, ok := m.sd.units[f]
		if !ok {
			u = &Unit{ActiveState: "inactive", SubState: "dead"}
			m.sd.units[f] = u
		}
		if u.UnitFileState != "masked" {
			u.UnitFileState, u.NeedDaemonReload = "masked", true
			changes = append(changes, unitFileChange{"symlink", "/etc/systemd/system/" + f, "/dev/null"})
		}
	}
	return changes, nil
}

func (m manager) UnmaskUnitFiles(files []string, runtime bool) ([]unitFileChange, *dbus.Error) {
	m.sd.mu.Lock()
	defer m.sd.mu.Unlock()
	m.sd.record("UnmaskUnitFiles " + strings.Join(files, " "))
	var changes []unitFileChange
	for _, f := range files {
		if u, ok := m.sd.units[f]; ok && u.UnitFileState == "masked" {
			u.UnitFileState, u.NeedDaemonReload = "", true
			u.LoadState = "not-found"
			changes = append(changes, unitFileChange{"unlink", "/etc/systemd/system/" + f, ""})
		}
	}
	return changes, nil
}

func (m manager) StartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	return m.sd.job("StartUnit", name, true)
}

func (m manager) RestartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	return m.sd.job("RestartUnit", name, true)
}

func (m manager) StopUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	return m.sd.job("StopUnit", name, false)
}

// job changes the unit's state at once and announces the job's end with
// JobRemoved, as systemd does when the job finishes.
func (s *Systemd) job(method, name string, start bool) (dbus.ObjectPath, *dbus.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(method + " " + name)
	u, derr := s.known(name)
	if derr != nil {
		return "", derr
	}
	if start && u.UnitFileState == "masked" {
		return "", dbus.NewError("org.freedesktop.systemd1.UnitMasked", []any{"Unit " + name + " is masked."})
	}
	s.jobs++
	id := uint32(s.jobs)
	result := "done"
	switch {
	case !start:
		u.ActiveState, u.SubState = "inactive", "dead"
	case u.JobResult == "" || u.JobResult == "done":
		u.ActiveState, u.SubState = "active", "running"
	default:
		result = u.JobResult
		u.ActiveState, u.SubState = "failed", "failed"
	}
	path := dbus.ObjectPath("/org/freedesktop/systemd1/job/" + strconv.Itoa(int(id)))
	go func() {
		// After the reply, as systemd finishes a job after queueing it.
		time.Sleep(5 * time.Millisecond)
		s.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, path, name, result)
	}()
	return path, nil
}

// unitProps serves org.freedesktop.DBus.Properties on unit objects.
type unitProps struct{ sd *Systemd }

func (p unitProps) props(msg dbus.Message) (map[string]dbus.Variant, *dbus.Error) {
	path, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	name, err := unescapeUnitPath(string(path))
	if err != nil {
		return nil, dbus.MakeFailedError(err)
	}
	p.sd.mu.Lock()
	defer p.sd.mu.Unlock()
	u := p.sd.lookup(name)
	return map[string]dbus.Variant{
		"Id":               dbus.MakeVariant(name),
		"Description":      dbus.MakeVariant(u.Description),
		"LoadState":        dbus.MakeVariant(u.LoadState),
		"ActiveState":      dbus.MakeVariant(u.ActiveState),
		"SubState":         dbus.MakeVariant(u.SubState),
		"UnitFileState":    dbus.MakeVariant(u.UnitFileState),
		"NeedDaemonReload": dbus.MakeVariant(u.NeedDaemonReload),
	}, nil
}

func (p unitProps) GetAll(msg dbus.Message, iface string) (map[string]dbus.Variant, *dbus.Error) {
	return p.props(msg)
}

func (p unitProps) Get(msg dbus.Message, iface, name string) (dbus.Variant, *dbus.Error) {
	all, err := p.props(msg)
	if err != nil {
		return dbus.Variant{}, err
	}
	v, ok := all[name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{"unknown property " + name})
	}
	return v, nil
}

// unescapeUnitPath returns the unit name of a unit object path, undoing
// systemd's bus path escaping (_2e for ".").
func unescapeUnitPath(path string) (string, error) {
	esc := path[strings.LastIndexByte(path, '/')+1:]
	var b strings.Builder
	for i := 0; i < len(esc); i++ {
		if esc[i] == '_' && i+2 < len(esc) {
			n, err := strconv.ParseUint(esc[i+1:i+3], 16, 8)
			if err != nil {
				return "", fmt.Errorf("bad escape in %s", path)
			}
			b.WriteByte(byte(n))
			i += 2
			continue
		}
		b.WriteByte(esc[i])
	}
	return b.String(), nil
}
