package module

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*SELinux)(nil)

// SELinux sets the SELinux mode at boot (SELINUX= in /etc/selinux/config)
// and now (setenforce), as kubeadm's install guide does for Rocky/RHEL
// (permissive). A node without SELinux (no /etc/selinux/config and no
// selinuxfs) is left alone.
type SELinux struct {
	mode string
}

const selinuxConfig = "/etc/selinux/config"

var selinuxLine = regexp.MustCompile(`(?m)^SELINUX=.*$`)

// NewSELinux validates m.
func NewSELinux(m *agentv1.SELinuxModule) (*SELinux, error) {
	switch m.GetMode() {
	case "enforcing", "permissive", "disabled":
		return &SELinux{mode: m.GetMode()}, nil
	}
	return nil, fmt.Errorf("%w: selinux mode %q: want enforcing, permissive or disabled", ErrInvalid, m.GetMode())
}

// Check reports what would change.
func (s *SELinux) Check(ctx context.Context, env *Env) (Result, error) { return s.run(ctx, env, false) }

// Apply sets the mode.
func (s *SELinux) Apply(ctx context.Context, env *Env) (Result, error) { return s.run(ctx, env, true) }

func (s *SELinux) run(ctx context.Context, env *Env, apply bool) (Result, error) {
	cfg, err := os.ReadFile(env.Path(selinuxConfig))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(env.Path("/sys/fs/selinux/enforce")); serr != nil {
			return Result{SkippedReason: "SELinux is not on this node"}, nil
		}
		cfg = nil
	} else if err != nil {
		return Result{}, fmt.Errorf("read %s: %w", selinuxConfig, err)
	}
	var d diffBuilder
	var res Result
	want := "SELINUX=" + s.mode
	content := string(cfg)
	if selinuxLine.MatchString(content) {
		content = selinuxLine.ReplaceAllString(content, want)
	} else {
		if content != "" && !strings.HasSuffix(content, "\n") {
			content += "\n"
		}
		content += want + "\n"
	}
	fr, err := syncFile(ctx, env, managedFile{path: selinuxConfig, content: []byte(content)}, apply)
	if err != nil {
		return Result{}, err
	}
	res.Changed = fr.Changed
	d.add(fr.Diff)

	// The running mode: /sys/fs/selinux/enforce is 1 (enforcing) or 0.
	b, err := os.ReadFile(env.Path("/sys/fs/selinux/enforce"))
	if err == nil {
		running := map[string]string{"1": "enforcing", "0": "permissive"}[strings.TrimSpace(string(b))]
		target := s.mode
		if target == "disabled" {
			target = "permissive" // disabling takes a reboot
		}
		if running != "" && running != target {
			res.Changed = true
			d.line(fmt.Sprintf("setenforce: %s -> %s", running, target))
			if apply {
				arg := map[string]string{"enforcing": "1", "permissive": "0"}[target]
				if _, err := env.cmdRunner().Run(ctx, []string{"setenforce", arg}, nil, nil); err != nil {
					return res, fmt.Errorf("setenforce %s: %w", arg, err)
				}
			}
		}
	}
	if res.Changed {
		res.Diff = d.String()
	}
	return res, nil
}
