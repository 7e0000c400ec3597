package profile

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kthw/kthw/distro/pkg"
)

// ErrKeyMissing marks a repository whose signing key is neither embedded
// nor given.
var ErrKeyMissing = errors.New("repository signing key missing")

// ResolvedRepository is a profile repository made concrete for one
// matrix, ready for the repository module.
type ResolvedRepository struct {
	// Purpose is kubernetes or containerd.
	Purpose string
	pkg.Repo
}

// RepositoriesFor returns the profile's repositories for matrix m: {minor}
// replaced by m's Kubernetes minor version and each repository's key
// taken from keys (by repository name: a cluster file's override, e.g.
// when upstream re-publishes a key) or else from the embedded key. A
// repository with neither is an error wrapping ErrKeyMissing.
func (p *Profile) RepositoriesFor(m Matrix, keys map[string][]byte) ([]ResolvedRepository, error) {
	minor := m.KubernetesMinor()
	if minor == "" {
		return nil, fmt.Errorf("profile %s repositories: kubernetes version %q is not a version", p.Name, m.Kubernetes)
	}
	var out []ResolvedRepository
	var errs []error
	for _, r := range p.Repositories {
		key := keys[r.Name]
		if len(key) == 0 && r.Key != "" {
			b, err := files.ReadFile("keys/" + r.Key + ".asc")
			if err != nil {
				errs = append(errs, fmt.Errorf("repository %s: %w", r.Name, err))
				continue
			}
			key = b
		}
		if len(key) == 0 {
			errs = append(errs, fmt.Errorf("repository %s (%s): %w: give its ASCII-armored public key in the cluster file", r.Name, r.URI, ErrKeyMissing))
			continue
		}
		repo := pkg.Repo{
			Name:        r.Name,
			Description: strings.ReplaceAll(r.Description, "{minor}", minor),
			URI:         strings.ReplaceAll(r.URI, "{minor}", minor),
			Suite:       r.Suite,
			Components:  r.Components,
			Key:         key,
		}
		if err := repo.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, ResolvedRepository{Purpose: r.Purpose, Repo: repo})
	}
	for name := range keys {
		if !p.hasRepository(name) {
			errs = append(errs, fmt.Errorf("key for repository %q: profile %s has no such repository", name, p.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("profile %s repositories: %w", p.Name, err)
	}
	return out, nil
}

func (p *Profile) hasRepository(name string) bool {
	for _, r := range p.Repositories {
		if r.Name == name {
			return true
		}
	}
	return false
}
