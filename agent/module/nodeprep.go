package module

import (
	"context"
	"strings"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// This file holds what the node-preparation modules (sysctl, kernel modules,
// swap, hostname, systemd unit, containerd) share.

// managedHeader starts every file a node-prep module renders in full.
const managedHeader = "# Managed by kthw; local changes are overwritten.\n"

// managedFile is a file a module renders whole: its content is replaced
// atomically, through the File module, with a unified diff.
type managedFile struct {
	path    string
	content []byte
	// mode 0 keeps an existing file's mode (0644 for a new file).
	mode   uint32
	absent bool
}

// syncFile reports (apply false) or makes (apply true) the change that
// brings f's file on disk to what f wants; missing parent directories are
// created.
func syncFile(ctx context.Context, env *Env, f managedFile, apply bool) (Result, error) {
	spec := &agentv1.FileModule{Path: f.path, Mode: f.mode, MakeParents: true}
	if f.absent {
		spec.State = agentv1.FileModule_STATE_ABSENT
	} else {
		spec.Source = &agentv1.FileModule_Content{Content: f.content}
	}
	fm, err := NewFile(spec)
	if err != nil {
		return Result{}, err
	}
	if apply {
		return fm.Apply(ctx, env)
	}
	return fm.Check(ctx, env)
}

// cmdRunner returns the Env's command runner, or one that runs commands
// directly when the Env has none.
func (e *Env) cmdRunner() pkg.Runner {
	if e.Runner != nil {
		return e.Runner
	}
	return ExecRunner(e)
}

// diffBuilder collects the lines and file diffs that make up a module's
// Diff.
type diffBuilder struct{ b strings.Builder }

// line adds one line of text.
func (d *diffBuilder) line(s string) {
	d.b.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		d.b.WriteByte('\n')
	}
}

// add adds a file diff (or nothing for "").
func (d *diffBuilder) add(diff string) {
	if diff != "" {
		d.line(diff)
	}
}

func (d *diffBuilder) String() string { return d.b.String() }
