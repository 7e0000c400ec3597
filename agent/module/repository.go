package module

import (
	"context"
	"fmt"
	"strings"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Repository)(nil)

// Repository adds a package repository with its signing key, or removes
// it. The files come from the package manager (pkg.Manager.RepoFiles: a
// deb822 sources file and a key in /etc/apt/keyrings for apt, a .repo file
// and a key in /etc/pki/rpm-gpg for dnf and zypper) and are written as the
// file module writes files: atomically, with a diff. When a file changes,
// the package index is marked stale, so the next install refreshes it
// whatever its age. Where the manager trusts keys through its own database
// (rpm), the key is imported too. Removing a repository leaves an imported
// key in rpm's database.
type Repository struct {
	repo    pkg.Repo
	absent  bool
	manager string
}

// NewRepository validates m and returns the module that carries it out.
func NewRepository(m *agentv1.RepositoryModule) (*Repository, error) {
	r := &Repository{
		repo: pkg.Repo{
			Name:        m.GetName(),
			Description: m.GetDescription(),
			URI:         m.GetUri(),
			Suite:       m.GetSuite(),
			Components:  m.GetComponents(),
			Key:         m.GetKey(),
		},
		absent:  m.GetState() == agentv1.RepositoryModule_STATE_ABSENT,
		manager: m.GetManager(),
	}
	switch m.GetState() {
	case agentv1.RepositoryModule_STATE_PRESENT, agentv1.RepositoryModule_STATE_ABSENT:
	default:
		return nil, fmt.Errorf("%w: unknown state %v", ErrInvalid, m.GetState())
	}
	if err := checkManagerName(r.manager); err != nil {
		return nil, err
	}
	if r.absent {
		// Only the name matters: it names the files to remove.
		if err := pkg.CheckRepoName(r.repo.Name); err != nil {
			return nil, fmt.Errorf("%w: repository: %w", ErrInvalid, err)
		}
		return r, nil
	}
	if err := r.repo.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return r, nil
}

// files returns the file modules that make the repository present or
// absent.
func (r *Repository) files(mgr pkg.Manager) ([]*File, error) {
	var specs []*agentv1.FileModule
	if r.absent {
		for _, p := range mgr.RepoPaths(r.repo.Name) {
			specs = append(specs, &agentv1.FileModule{Path: p, State: agentv1.FileModule_STATE_ABSENT})
		}
	} else {
		files, err := mgr.RepoFiles(r.repo)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			specs = append(specs, &agentv1.FileModule{
				Path:        f.Path,
				Source:      &agentv1.FileModule_Content{Content: f.Content},
				Mode:        f.Mode,
				MakeParents: true,
			})
		}
	}
	out := make([]*File, len(specs))
	for i, s := range specs {
		f, err := NewFile(s)
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", r.repo.Name, err)
		}
		out[i] = f
	}
	return out, nil
}

// Check reports the file diffs and whether the key would be imported.
func (r *Repository) Check(ctx context.Context, env *Env) (Result, error) {
	return r.run(ctx, env, true)
}

// Apply writes (or removes) the files, imports the key where the manager
// needs that, and marks the index stale after a change.
func (r *Repository) Apply(ctx context.Context, env *Env) (Result, error) {
	return r.run(ctx, env, false)
}

func (r *Repository) run(ctx context.Context, env *Env, check bool) (Result, error) {
	mgr, err := packageManager(ctx, env, r.manager)
	if err != nil {
		return Result{}, err
	}
	files, err := r.files(mgr)
	if err != nil {
		return Result{}, err
	}
	var res Result
	var diff strings.Builder
	for _, f := range files {
		run := f.Apply
		if check {
			run = f.Check
		}
		fr, err := run(ctx, env)
		if err != nil {
			return Result{Changed: res.Changed, Diff: diff.String()}, err
		}
		if fr.Changed {
			res.Changed = true
			diff.WriteString(fr.Diff)
		}
	}
	filesChanged := res.Changed
	if ki, ok := mgr.(pkg.KeyImporter); ok && !r.absent {
		trusted, err := ki.KeyTrusted(ctx, r.repo.Key)
		if err != nil {
			return Result{Changed: res.Changed, Diff: diff.String()}, err
		}
		if !trusted {
			res.Changed = true
			fmt.Fprintf(&diff, "import the key of %s into the %s key database\n", r.repo.Name, mgr.Name())
			if !check {
				if err := ki.ImportKey(ctx, r.repo.Name); err != nil {
					return Result{Changed: true, Diff: diff.String()}, err
				}
				env.info("imported the key of " + r.repo.Name)
			}
		}
	}
	if filesChanged {
		diff.WriteString("the package index will be refreshed before the next install\n")
		if sm, ok := mgr.(pkg.StaleMarker); ok && !check {
			if err := sm.MarkStale(); err != nil {
				return Result{Changed: true, Diff: diff.String()}, err
			}
		}
	}
	if !res.Changed && !check {
		state := "present"
		if r.absent {
			state = "absent"
		}
		env.info(fmt.Sprintf("repository %s is %s and up to date", r.repo.Name, state))
	}
	res.Diff = diff.String()
	return res, nil
}
