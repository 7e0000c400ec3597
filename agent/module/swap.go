package module

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Swap)(nil)

// Swap turns swap off now and at boot, as the kubelet requires: it comments
// out the swap entries of /etc/fstab (from which systemd's fstab generator
// makes its swap units, so they go at the next boot or daemon-reload) and
// runs swapoff -a while /proc/swaps lists any swap.
//
// It does not mask swap units that do not come from fstab (a swap partition
// found by systemd-gpt-auto-generator, zram from zram-generator): those are
// left to a SystemdUnitModule with masked set.
type Swap struct{}

// NewSwap returns the module that turns swap off.
func NewSwap(*agentv1.SwapModule) (*Swap, error) { return &Swap{}, nil }

const fstabPath = "/etc/fstab"

// activeSwaps returns the devices and files /proc/swaps lists.
func activeSwaps(env *Env) ([]string, error) {
	b, err := os.ReadFile(env.Path("/proc/swaps"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read /proc/swaps: %w", err)
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 { // header: Filename Type Size Used Priority
			continue
		}
		out = append(out, f[0])
	}
	return out, nil
}

// fstabWithoutSwap returns /etc/fstab with its swap entries commented out,
// and whether there was a file.
func fstabWithoutSwap(env *Env) ([]byte, bool, error) {
	b, err := os.ReadFile(env.Path(fstabPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", fstabPath, err)
	}
	var out strings.Builder
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 3 && !strings.HasPrefix(f[0], "#") && f[2] == "swap" {
			out.WriteString("#")
		}
		out.WriteString(line)
	}
	return []byte(out.String()), true, nil
}

// Check reports the fstab diff and whether swapoff would run.
func (s *Swap) Check(ctx context.Context, env *Env) (Result, error) {
	return s.run(ctx, env, false)
}

// Apply comments out fstab's swap entries, then turns active swap off.
func (s *Swap) Apply(ctx context.Context, env *Env) (Result, error) {
	return s.run(ctx, env, true)
}

func (s *Swap) run(ctx context.Context, env *Env, apply bool) (Result, error) {
	var d diffBuilder
	res := Result{}
	fstab, ok, err := fstabWithoutSwap(env)
	if err != nil {
		return Result{}, err
	}
	if ok {
		fr, err := syncFile(ctx, env, managedFile{path: fstabPath, content: fstab}, apply)
		if err != nil {
			return Result{}, err
		}
		res.Changed = fr.Changed
		d.add(fr.Diff)
	}
	active, err := activeSwaps(env)
	if err != nil {
		return Result{}, err
	}
	if len(active) == 0 {
		env.info("no swap is active")
	} else {
		res.Changed = true
		d.line("swapoff -a (active: " + strings.Join(active, ", ") + ")")
		if apply {
			res.Diff = d.String()
			if _, err := env.cmdRunner().Run(ctx, []string{"swapoff", "-a"}, nil, nil); err != nil {
				return res, fmt.Errorf("turn swap off: %w", err)
			}
			still, err := activeSwaps(env)
			if err != nil {
				return res, err
			}
			if len(still) > 0 {
				return res, fmt.Errorf("turn swap off: still active after swapoff -a: %s", strings.Join(still, ", "))
			}
			env.info("turned swap off: " + strings.Join(active, ", "))
		}
	}
	if res.Changed {
		res.Diff = d.String()
	}
	return res, nil
}
