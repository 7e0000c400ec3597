package module

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kthw/kthw/agent/internal/systemdtest"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

const testUnit = `[Unit]
Description=kthw test unit

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
`

func newSystemdUnit(t *testing.T, m *agentv1.SystemdUnitModule) *SystemdUnit {
	t.Helper()
	u, err := NewSystemdUnit(m)
	if err != nil {
		t.Fatalf("NewSystemdUnit: %v", err)
	}
	return u
}

func unitEnv(t *testing.T) *recorder {
	t.Helper()
	env := newRecorder(t, "")
	if err := os.MkdirAll(env.Path(UnitDir), 0o755); err != nil {
		t.Fatal(err)
	}
	env.Runner = &prepRunner{handle: func(argv []string) ([]byte, error) {
		if argv[0] == "journalctl" {
			return []byte("Starting kthw test unit...\nkthw-test.service: Main process exited, code=exited, status=1/FAILURE\n"), nil
		}
		return nil, nil
	}}
	return env
}

func TestSystemdUnitLifecycle(t *testing.T) {
	// Known to the fake but not loaded: its file is new.
	sd := systemdtest.Start(t, map[string]systemdtest.Unit{"kthw-test.service": {LoadState: "not-found", ActiveState: "inactive", SubState: "dead"}})
	env := unitEnv(t)
	yes := true
	m := &agentv1.SystemdUnitModule{
		Name:    "kthw-test.service",
		Content: testUnit,
		Dropins: map[string]string{"10-env": "[Service]\nEnvironment=A=1\n"},
		Enabled: &yes,
		State:   agentv1.SystemdUnitModule_STATE_RESTARTED_ON_CHANGE,
	}
	u := newSystemdUnit(t, m)

	res := prepRun(t, "Check", u.Check, &env.Env)
	t.Run("check", func(t *testing.T) { prepGolden(t, res.Diff) })
	if calls := sd.Calls(); len(calls) != 0 {
		t.Fatalf("Check made calls %q", calls)
	}
	if _, err := os.Stat(env.Path("/etc/systemd/system/kthw-test.service")); err == nil {
		t.Fatal("Check wrote the unit file")
	}

	res = prepRun(t, "Apply", u.Apply, &env.Env)
	t.Run("apply", func(t *testing.T) { prepGolden(t, res.Diff) })
	want := []string{"EnableUnitFiles kthw-test.service", "Reload", "StartUnit kthw-test.service"}
	if got := sd.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if got := env.readFile(t, "/etc/systemd/system/kthw-test.service.d/10-env.conf"); got != "[Service]\nEnvironment=A=1\n" {
		t.Errorf("drop-in = %q", got)
	}

	res = prepRun(t, "second Apply", u.Apply, &env.Env)
	if res.Changed || len(sd.Calls()) != len(want) {
		t.Errorf("second Apply = %+v, calls %q; want no change", res, sd.Calls()[len(want):])
	}

	m.Dropins["10-env"] = "[Service]\nEnvironment=A=2\n"
	u = newSystemdUnit(t, m)
	res = prepRun(t, "Apply with a changed drop-in", u.Apply, &env.Env)
	t.Run("restart", func(t *testing.T) { prepGolden(t, res.Diff) })
	want = append(want, "EnableUnitFiles kthw-test.service", "Reload", "RestartUnit kthw-test.service")
	if got := sd.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

func TestSystemdUnitStartFails(t *testing.T) {
	systemdtest.Start(t, map[string]systemdtest.Unit{"kthw-test.service": {
		LoadState: "loaded", ActiveState: "inactive", SubState: "dead", UnitFileState: "enabled", JobResult: "failed",
	}})
	env := unitEnv(t)
	u := newSystemdUnit(t, &agentv1.SystemdUnitModule{Name: "kthw-test.service", State: agentv1.SystemdUnitModule_STATE_STARTED})
	_, err := u.Apply(context.Background(), &env.Env)
	if !errors.Is(err, ErrUnitFailed) {
		t.Fatalf("Apply: err = %v, want ErrUnitFailed", err)
	}
	for _, want := range []string{`job result "failed"`, "unit failed (failed)", "status=1/FAILURE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSystemdUnitNotFound(t *testing.T) {
	systemdtest.Start(t, nil)
	env := unitEnv(t)
	u := newSystemdUnit(t, &agentv1.SystemdUnitModule{Name: "nosuch.service", State: agentv1.SystemdUnitModule_STATE_STARTED})
	if _, err := u.Apply(context.Background(), &env.Env); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Apply: err = %v, want not found", err)
	}
}

func TestSystemdUnitStopDisableMask(t *testing.T) {
	running := systemdtest.Unit{LoadState: "loaded", ActiveState: "active", SubState: "running", UnitFileState: "enabled"}
	sd := systemdtest.Start(t, map[string]systemdtest.Unit{"a.service": running, "b.service": running})
	env := unitEnv(t)
	no := false
	disable := newSystemdUnit(t, &agentv1.SystemdUnitModule{Name: "a.service", Enabled: &no, State: agentv1.SystemdUnitModule_STATE_STOPPED})
	res := prepRun(t, "Apply disable", disable.Apply, &env.Env)
	if !res.Changed || !strings.Contains(res.Diff, "disable a.service (enabled)") || !strings.Contains(res.Diff, "stop a.service (currently active)") {
		t.Errorf("Apply disable = %+v", res)
	}
	mask := newSystemdUnit(t, &agentv1.SystemdUnitModule{Name: "b.service", Masked: true})
	prepRun(t, "Apply mask", mask.Apply, &env.Env)
	want := []string{"DisableUnitFiles a.service", "Reload", "StopUnit a.service", "StopUnit b.service", "MaskUnitFiles b.service", "Reload"}
	if got := sd.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	for _, m := range []*SystemdUnit{disable, mask} {
		if res := prepRun(t, "again", m.Apply, &env.Env); res.Changed {
			t.Errorf("second run = %+v", res)
		}
	}
	if got := sd.Calls(); len(got) != len(want) {
		t.Errorf("second runs made calls %q", got[len(want):])
	}

	// Unmasking it again with a unit file of our own.
	unmask := newSystemdUnit(t, &agentv1.SystemdUnitModule{Name: "b.service", Content: testUnit, State: agentv1.SystemdUnitModule_STATE_STARTED})
	res = prepRun(t, "Apply unmask", unmask.Apply, &env.Env)
	if !strings.HasPrefix(res.Diff, "unmask b.service\n") || !strings.HasSuffix(res.Diff, "daemon-reload\nstart b.service (currently inactive)\n") {
		t.Errorf("unmask diff:\n%s", res.Diff)
	}
	want = append(want, "UnmaskUnitFiles b.service", "Reload", "StartUnit b.service")
	if got := sd.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

func TestNewSystemdUnitInvalid(t *testing.T) {
	yes := true
	for name, m := range map[string]*agentv1.SystemdUnitModule{
		"no suffix":         {Name: "foo"},
		"path":              {Name: "../foo.service"},
		"only suffix":       {Name: ".service"},
		"bad drop-in":       {Name: "foo.service", Dropins: map[string]string{"../x": ""}},
		"same drop-in":      {Name: "foo.service", Dropins: map[string]string{"x": "", "x.conf": ""}},
		"masked started":    {Name: "foo.service", Masked: true, State: agentv1.SystemdUnitModule_STATE_STARTED},
		"masked enabled":    {Name: "foo.service", Masked: true, Enabled: &yes},
		"masked with file":  {Name: "foo.service", Masked: true, Content: testUnit},
		"unknown state":     {Name: "foo.service", State: 9},
		"space in the name": {Name: "foo bar.service"},
	} {
		if _, err := NewSystemdUnit(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
