package module

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/kthw/kthw/agent/facts"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*SystemdUnit)(nil)

// UnitDir is where SystemdUnit writes unit files and drop-in directories.
const UnitDir = "/etc/systemd/system"

// ErrUnitFailed marks a unit whose start, restart or stop job did not end
// in "done", or that is not active after a start.
var ErrUnitFailed = errors.New("systemd unit failed")

// journalLines is how many of a failed unit's last journal lines an error
// carries.
const journalLines = 10

var unitSuffixes = []string{".service", ".socket", ".target", ".timer", ".path", ".mount",
	".automount", ".swap", ".slice", ".scope", ".device"}

// SystemdUnit manages a unit file and its drop-ins (written atomically,
// with diffs) and the unit's state through systemd's D-Bus API: daemon-reload
// only when a file changed, enable/disable, mask/unmask, and
// start/stop/restart, waiting for the job's result. Check asks systemd
// about the unit and changes nothing.
type SystemdUnit struct {
	spec unitSpec
}

// unitSpec is what a module wants of one unit. The containerd module uses
// it for containerd.service.
type unitSpec struct {
	name    string
	content string            // unit file; "" leaves it alone (a packaged unit)
	dropins map[string]string // drop-in file name (ending .conf) -> content
	enabled *bool             // nil leaves enablement alone
	state   agentv1.SystemdUnitModule_State
	masked  bool
}

// NewSystemdUnit validates m and returns the module that manages its unit.
func NewSystemdUnit(m *agentv1.SystemdUnitModule) (*SystemdUnit, error) {
	s := unitSpec{name: m.GetName(), content: m.GetContent(), dropins: map[string]string{}, state: m.GetState(), masked: m.GetMasked()}
	if m.Enabled != nil {
		e := m.GetEnabled()
		s.enabled = &e
	}
	if !validUnitName(s.name) {
		return nil, fmt.Errorf("%w: unit name %q (want e.g. foo.service)", ErrInvalid, s.name)
	}
	for k, v := range m.GetDropins() {
		name := k
		if !strings.HasSuffix(name, ".conf") {
			name += ".conf"
		}
		if k == "" || strings.HasPrefix(k, ".") || strings.ContainsAny(k, "/\x00\n") {
			return nil, fmt.Errorf("%w: drop-in name %q", ErrInvalid, k)
		}
		if _, dup := s.dropins[name]; dup {
			return nil, fmt.Errorf("%w: drop-in %s given twice", ErrInvalid, name)
		}
		s.dropins[name] = v
	}
	switch s.state {
	case agentv1.SystemdUnitModule_STATE_UNCHANGED, agentv1.SystemdUnitModule_STATE_STOPPED:
	case agentv1.SystemdUnitModule_STATE_STARTED, agentv1.SystemdUnitModule_STATE_RESTARTED_ON_CHANGE:
		if s.masked {
			return nil, fmt.Errorf("%w: a masked unit cannot be %v", ErrInvalid, s.state)
		}
	default:
		return nil, fmt.Errorf("%w: unknown state %v", ErrInvalid, s.state)
	}
	if s.masked && (s.content != "" || len(s.dropins) > 0 || (s.enabled != nil && *s.enabled)) {
		return nil, fmt.Errorf("%w: a masked unit has no unit file, drop-ins or enablement", ErrInvalid)
	}
	return &SystemdUnit{spec: s}, nil
}

func validUnitName(n string) bool {
	if len(n) > 255 || !slices.ContainsFunc(unitSuffixes, func(s string) bool { return strings.HasSuffix(n, s) && len(n) > len(s) }) {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(":_.@-\\", c)) {
			return false
		}
	}
	return n[0] != '.'
}

// Check reports what Apply would change: file diffs, and the reload,
// enablement and state changes it would ask systemd for.
func (u *SystemdUnit) Check(ctx context.Context, env *Env) (Result, error) {
	conn, err := dialSystemd(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	return ensureUnit(ctx, env, conn, u.spec, false, false)
}

// Apply writes the files and brings the unit to the wanted state.
func (u *SystemdUnit) Apply(ctx context.Context, env *Env) (Result, error) {
	conn, err := dialSystemd(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	return ensureUnit(ctx, env, conn, u.spec, false, true)
}

func dialSystemd(ctx context.Context) (*sddbus.Conn, error) {
	conn, err := facts.DialSystemd(ctx)
	if err != nil {
		return nil, fmt.Errorf("manage systemd units: %w", err)
	}
	return conn, nil
}

func (s unitSpec) files() []managedFile {
	var out []managedFile
	if s.content != "" {
		out = append(out, managedFile{path: path.Join(UnitDir, s.name), content: []byte(s.content), mode: 0o644})
	}
	for _, name := range slices.Sorted(maps.Keys(s.dropins)) {
		out = append(out, managedFile{path: path.Join(UnitDir, s.name+".d", name), content: []byte(s.dropins[name]), mode: 0o644})
	}
	return out
}

// unitStatus is what systemd says about a unit.
type unitStatus struct {
	loadState, activeState, subState string
	// fileState is UnitFileState: enabled, disabled, static, masked, ...;
	// "" when there is no unit file.
	fileState  string
	needReload bool
}

func (s unitStatus) running() bool {
	switch s.activeState {
	case "active", "activating", "reloading", "refreshing":
		return true
	}
	return false
}

func (s unitStatus) isMasked() bool {
	return s.fileState == "masked" || s.fileState == "masked-runtime" || s.loadState == "masked"
}

// enabledEnough reports whether a unit counts as enabled: it is, or it has
// no [Install] section to enable (static, generated, an alias).
func (s unitStatus) enabledEnough() bool {
	switch s.fileState {
	case "enabled", "static", "generated", "alias", "transient":
		return true
	}
	return false
}

func queryUnit(ctx context.Context, conn *sddbus.Conn, name string) (unitStatus, error) {
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return unitStatus{}, fmt.Errorf("query unit %s: %w", name, err)
	}
	str := func(k string) string { s, _ := props[k].(string); return s }
	reload, _ := props["NeedDaemonReload"].(bool)
	return unitStatus{
		loadState:   str("LoadState"),
		activeState: str("ActiveState"),
		subState:    str("SubState"),
		fileState:   str("UnitFileState"),
		needReload:  reload,
	}, nil
}

// ensureUnit reports (apply false) or makes (apply true) the changes that
// bring the unit to spec. otherChanged tells that a file the unit reads
// (but ensureUnit does not manage) changed in this run: a unit to be
// restarted on change is then restarted.
func ensureUnit(ctx context.Context, env *Env, conn *sddbus.Conn, spec unitSpec, otherChanged, apply bool) (res Result, err error) {
	var d diffBuilder
	defer func() {
		if res.Changed {
			res.Diff = d.String()
		}
	}()
	name := spec.name
	st, err := queryUnit(ctx, conn, name)
	if err != nil {
		return res, err
	}
	reload := st.needReload
	if st.needReload {
		d.line("daemon-reload (systemd has not loaded the unit's current files)")
	}

	if !spec.masked && st.isMasked() {
		res.Changed, reload = true, true
		d.line("unmask " + name)
		if apply {
			if _, err := conn.UnmaskUnitFilesContext(ctx, []string{name}, false); err != nil {
				return res, fmt.Errorf("unmask %s: %w", name, err)
			}
			env.info("unmasked " + name)
		}
	}

	filesChanged := false
	for _, f := range spec.files() {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		fr, err := syncFile(ctx, env, f, apply)
		if err != nil {
			return res, err
		}
		if fr.Changed {
			filesChanged, reload, res.Changed = true, true, true
			d.add(fr.Diff)
		}
	}

	if spec.masked && !st.isMasked() {
		res.Changed, reload = true, true
		if st.running() {
			d.line(fmt.Sprintf("stop %s (%s)", name, st.activeState))
			if apply {
				if err := runJob(ctx, env, conn, "stop", name); err != nil {
					return res, err
				}
			}
		}
		d.line("mask " + name)
		if apply {
			if _, err := conn.MaskUnitFilesContext(ctx, []string{name}, false, false); err != nil {
				return res, fmt.Errorf("mask %s: %w", name, err)
			}
			env.info("masked " + name)
		}
	}

	if spec.enabled != nil {
		changed, err := ensureEnablement(ctx, env, conn, name, *spec.enabled, st, filesChanged, apply, &d)
		if err != nil {
			return res, err
		}
		if changed {
			res.Changed, reload = true, true
		}
	}

	if reload {
		if !st.needReload {
			d.line("daemon-reload")
		}
		if apply {
			if err := conn.ReloadContext(ctx); err != nil {
				return res, fmt.Errorf("reload systemd: %w", err)
			}
			env.info("reloaded systemd")
			if st, err = queryUnit(ctx, conn, name); err != nil {
				return res, err
			}
		}
	}

	job := ""
	switch spec.state {
	case agentv1.SystemdUnitModule_STATE_STARTED:
		if !st.running() {
			job = "start"
		}
	case agentv1.SystemdUnitModule_STATE_RESTARTED_ON_CHANGE:
		switch {
		case !st.running():
			job = "start"
		case filesChanged || otherChanged:
			job = "restart"
		}
	case agentv1.SystemdUnitModule_STATE_STOPPED:
		if st.running() {
			job = "stop"
		}
	}
	if job == "" {
		if spec.state != agentv1.SystemdUnitModule_STATE_UNCHANGED {
			env.info(fmt.Sprintf("%s is %s (%s)", name, st.activeState, st.subState))
		}
		return res, nil
	}
	res.Changed = true
	why := "currently " + st.activeState
	if job == "restart" {
		why = "its configuration changed"
	}
	d.line(fmt.Sprintf("%s %s (%s)", job, name, why))
	if !apply {
		return res, nil
	}
	return res, runJob(ctx, env, conn, job, name)
}

// ensureEnablement enables or disables the unit, reporting whether it did.
func ensureEnablement(ctx context.Context, env *Env, conn *sddbus.Conn, name string, enable bool, st unitStatus, filesChanged, apply bool, d *diffBuilder) (bool, error) {
	if !enable {
		if st.fileState != "enabled" && st.fileState != "enabled-runtime" {
			return false, nil
		}
		d.line(fmt.Sprintf("disable %s (%s)", name, st.fileState))
		if !apply {
			return true, nil
		}
		changes, err := conn.DisableUnitFilesContext(ctx, []string{name}, st.fileState == "enabled-runtime")
		if err != nil {
			return false, fmt.Errorf("disable %s: %w", name, err)
		}
		for _, c := range changes {
			env.info(fmt.Sprintf("%s %s", c.Type, c.Filename))
		}
		return len(changes) > 0, nil
	}
	// A unit file written in this run may have changed its [Install]
	// section: systemd then tells what enabling it does.
	if st.enabledEnough() && !filesChanged {
		return false, nil
	}
	if !apply {
		if st.enabledEnough() {
			return false, nil
		}
		d.line(fmt.Sprintf("enable %s (%s)", name, orNone(st.fileState)))
		return true, nil
	}
	install, changes, err := conn.EnableUnitFilesContext(ctx, []string{name}, false, false)
	if err != nil {
		return false, fmt.Errorf("enable %s: %w", name, err)
	}
	if !install {
		env.info(name + " has no [Install] section (a static unit): nothing to enable")
	}
	for _, c := range changes {
		env.info(fmt.Sprintf("%s %s -> %s", c.Type, c.Filename, c.Destination))
	}
	if len(changes) == 0 {
		return false, nil
	}
	d.line(fmt.Sprintf("enable %s (%s)", name, orNone(st.fileState)))
	return true, nil
}

func orNone(fileState string) string {
	if fileState == "" {
		return "no unit file loaded yet"
	}
	return fileState
}

// runJob starts, restarts or stops the unit and waits for the job's result.
// A start or restart must end "done" with the unit active.
func runJob(ctx context.Context, env *Env, conn *sddbus.Conn, job, name string) error {
	ch := make(chan string, 1)
	var err error
	switch job {
	case "start":
		_, err = conn.StartUnitContext(ctx, name, "replace", ch)
	case "restart":
		_, err = conn.RestartUnitContext(ctx, name, "replace", ch)
	case "stop":
		_, err = conn.StopUnitContext(ctx, name, "replace", ch)
	default:
		return fmt.Errorf("unknown job %q", job)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", job, name, err)
	}
	env.info(fmt.Sprintf("%s %s: job queued, waiting", job, name))
	var result string
	select {
	case result = <-ch:
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting for the job: %w", job, name, ctx.Err())
	}
	st, qerr := queryUnit(ctx, conn, name)
	if result == "done" && (job == "stop" || qerr != nil || st.activeState != "failed") {
		env.info(fmt.Sprintf("%s %s: done (%s/%s)", job, name, st.activeState, st.subState))
		return nil
	}
	detail := ""
	if qerr == nil {
		detail = fmt.Sprintf(", unit %s (%s)", st.activeState, st.subState)
	}
	if lines := unitJournal(ctx, env, name); lines != "" {
		detail += "; last journal lines:\n" + lines
	}
	return fmt.Errorf("%s %s: %w: job result %q%s", job, name, ErrUnitFailed, result, detail)
}

// unitJournal returns the unit's last journal lines, or "" when journalctl
// cannot give them.
func unitJournal(ctx context.Context, env *Env, name string) string {
	out, err := env.cmdRunner().Run(ctx, []string{"journalctl", "--no-pager", "-o", "cat", "-n", fmt.Sprint(journalLines), "-u", name}, nil, nil)
	if err != nil {
		return ""
	}
	return strings.TrimRight(string(out), "\n")
}
