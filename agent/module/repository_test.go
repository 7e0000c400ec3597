package module

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func repoKey(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/repository-key.asc")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewRepositoryInvalid(t *testing.T) {
	key := repoKey(t)
	tests := map[string]*agentv1.RepositoryModule{
		"no name":          {Uri: "https://x/", Key: key},
		"path in name":     {Name: "../x", Uri: "https://x/", Key: key},
		"no uri":           {Name: "k", Key: key},
		"no key":           {Name: "k", Uri: "https://x/"},
		"binary key":       {Name: "k", Uri: "https://x/", Key: []byte{1, 2, 3}},
		"unknown manager":  {Name: "k", Uri: "https://x/", Key: key, Manager: "yum"},
		"absent, bad name": {Name: "K/", State: agentv1.RepositoryModule_STATE_ABSENT},
		"unknown state":    {Name: "k", Uri: "https://x/", Key: key, State: 9},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewRepository(m); !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewRepository: err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := NewRepository(&agentv1.RepositoryModule{Name: "k", State: agentv1.RepositoryModule_STATE_ABSENT}); err != nil {
		t.Errorf("absent needs only a name: %v", err)
	}
}

func newRepository(t *testing.T, m *agentv1.RepositoryModule) *Repository {
	t.Helper()
	r, err := NewRepository(m)
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	return r
}

func TestRepositoryApt(t *testing.T) {
	ctx := context.Background()
	env := newRecorder(t, "")
	// The real apt backend on the recorder's root; its commands are not run.
	mgr, err := pkg.New(pkg.APT, ExecRunner(&env.Env), pkg.Options{Root: env.Root})
	if err != nil {
		t.Fatal(err)
	}
	withManager(env, mgr)
	if err := os.MkdirAll(env.Path("/var/lib/apt/lists"), 0o755); err != nil {
		t.Fatal(err)
	}
	key := repoKey(t)
	spec := &agentv1.RepositoryModule{Name: "kubernetes", Uri: "https://pkgs.k8s.io/core:/stable:/v1.31/deb/", Suite: "/", Key: key}
	r := newRepository(t, spec)

	res := mustCheck(t, env, r)
	for _, want := range []string{"create /etc/apt/keyrings/kubernetes.asc", "create /etc/apt/sources.list.d/kubernetes.sources",
		"+Signed-By: /etc/apt/keyrings/kubernetes.asc", "refreshed before the next install"} {
		if !strings.Contains(res.Diff, want) {
			t.Errorf("Check diff lacks %q:\n%s", want, res.Diff)
		}
	}
	if _, err := os.Stat(env.Path("/etc/apt/keyrings")); !os.IsNotExist(err) {
		t.Fatalf("Check wrote files: %v", err)
	}
	mustApply(t, env, r, true)
	got, err := os.ReadFile(env.Path("/etc/apt/keyrings/kubernetes.asc"))
	if err != nil || string(got) != string(key) {
		t.Fatalf("key file = %v; want the key as given", err)
	}
	if mode, _, _ := statOf(t, env.Path("/etc/apt/keyrings/kubernetes.asc")); mode != 0o644 {
		t.Errorf("key mode %04o, want 0644", mode)
	}
	fi, err := os.Stat(env.Path("/var/lib/apt/lists"))
	if err != nil || !fi.ModTime().Equal(time.Unix(0, 0)) {
		t.Errorf("index not marked stale: %v %v", fi.ModTime(), err)
	}
	if err := os.Chtimes(env.Path("/var/lib/apt/lists"), time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	res = mustApply(t, env, r, false)
	if fi, _ := os.Stat(env.Path("/var/lib/apt/lists")); fi.ModTime().Equal(time.Unix(0, 0)) {
		t.Error("an unchanged repository marked the index stale")
	}

	// A new minor: the sources file changes, the key does not.
	spec.Uri = "https://pkgs.k8s.io/core:/stable:/v1.32/deb/"
	res = mustApply(t, env, newRepository(t, spec), true)
	if !strings.Contains(res.Diff, "-URIs: https://pkgs.k8s.io/core:/stable:/v1.31/deb/\n+URIs: https://pkgs.k8s.io/core:/stable:/v1.32/deb/") ||
		strings.Contains(res.Diff, "kubernetes.asc\n") && strings.Contains(res.Diff, "create /etc/apt/keyrings") {
		t.Errorf("diff after changing the URI:\n%s", res.Diff)
	}

	// A manager-specific mistake is a failed run, not an invalid request.
	bad := newRepository(t, &agentv1.RepositoryModule{Name: "x", Uri: "https://x/", Key: key})
	if _, err := bad.Apply(ctx, &env.Env); err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "suite is empty") {
		t.Errorf("Apply without a suite: %v", err)
	}

	absent := newRepository(t, &agentv1.RepositoryModule{Name: "kubernetes", State: agentv1.RepositoryModule_STATE_ABSENT})
	res = mustApply(t, env, absent, true)
	if !strings.Contains(res.Diff, "remove /etc/apt/sources.list.d/kubernetes.sources\n") || !strings.Contains(res.Diff, "remove /etc/apt/keyrings/kubernetes.asc\n") {
		t.Errorf("absent diff:\n%s", res.Diff)
	}
	mustApply(t, env, absent, false)
}

// keyManager is a memManager with rpm-style key trust.
type keyManager struct {
	*memManager
	trusted  bool
	imported []string
	stale    int
}

func (k *keyManager) KeyTrusted(ctx context.Context, key []byte) (bool, error) { return k.trusted, nil }
func (k *keyManager) ImportKey(ctx context.Context, name string) error {
	k.imported = append(k.imported, name)
	k.trusted = true
	return nil
}
func (k *keyManager) MarkStale() error { k.stale++; return nil }

func TestRepositoryImportsKey(t *testing.T) {
	env := newRecorder(t, "")
	km := &keyManager{memManager: newMemManager(t, nil)}
	withManager(env, km)
	r := newRepository(t, &agentv1.RepositoryModule{Name: "kubernetes", Uri: "https://x/deb/", Suite: "/", Key: repoKey(t)})
	res := mustCheck(t, env, r)
	if !strings.Contains(res.Diff, "import the key of kubernetes into the apt key database") || len(km.imported) != 0 {
		t.Errorf("Check: diff %q, imported %q", res.Diff, km.imported)
	}
	mustApply(t, env, r, true)
	if len(km.imported) != 1 || km.stale != 1 {
		t.Errorf("imported %q, marked stale %d times", km.imported, km.stale)
	}
	// Files in place but the key gone from the database: import only.
	km.trusted = false
	res = mustApply(t, env, r, true)
	if strings.Contains(res.Diff, "refreshed") || len(km.imported) != 2 || km.stale != 1 {
		t.Errorf("re-import: diff %q, imported %q, stale %d", res.Diff, km.imported, km.stale)
	}
	mustApply(t, env, r, false)
}
