package proxmox

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/config"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
	"github.com/kthw/kthw/controller/secret"
)

// memIDs is an in-memory IDStore.
type memIDs struct {
	mu  sync.Mutex
	ids map[string]string
	// sets counts SetProviderID calls per node.
	sets map[string]int
}

func newMemIDs() *memIDs { return &memIDs{ids: map[string]string{}, sets: map[string]int{}} }

func (m *memIDs) ProviderID(_ context.Context, node string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[node], nil
}

func (m *memIDs) SetProviderID(_ context.Context, node, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sets[node]++
	if id == "" {
		delete(m.ids, node)
	} else {
		m.ids[node] = id
	}
	return nil
}

func (m *memIDs) get(node string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[node]
}

// testAuthorizedKey is an ed25519 public key in authorized_keys format.
func testAuthorizedKey(t testing.TB) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(sp)
}

// simCluster is a cluster file for the simulator: cp-1, worker-1, worker-2
// unless pools are given.
func simCluster(t testing.TB, sim *pvesim.Sim, pools ...config.NodePool) *config.Cluster {
	t.Helper()
	c := config.Default("debian")
	c.Provider = config.Provider{Type: config.ProviderProxmox, Proxmox: &config.ProxmoxProvider{
		Endpoint: strings.TrimSuffix(sim.URL, "/api2/json"), Node: "pve1",
		TokenID: sim.TokenID, TokenSecretRef: "env:PM_TOKEN",
		Nameservers: []string{"10.200.0.1"}, SearchDomain: "lab.example",
		TaskTimeout: 30 * time.Second, BootTimeout: 30 * time.Second,
	}}
	if len(pools) > 0 {
		c.Pools = pools
	}
	c.SetDefaults()
	if err := c.Validate(nil); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return c
}

// passwordLogin makes c log in as the simulator's user with the password
// passwordRef resolves to (newSimProvider's env:PM_PASSWORD is the right
// one), instead of with the token.
func passwordLogin(t testing.TB, c *config.Cluster, sim *pvesim.Sim, passwordRef string) {
	t.Helper()
	px := c.Provider.Proxmox
	px.TokenID, px.TokenSecretRef = "", ""
	px.Username, px.PasswordRef = sim.Username, passwordRef
	if err := c.Validate(config.DefaultProfiles()); err != nil {
		t.Fatal(err)
	}
}

type simEnv struct {
	sim   *pvesim.Sim
	c     *config.Cluster
	p     *Provider
	ids   *memIDs
	key   []byte
	specs []config.NodeSpec
}

// newSimProvider runs a simulator and a provider on it with fast polling.
func newSimProvider(t testing.TB, c *config.Cluster, sim *pvesim.Sim, secretValue string) *simEnv {
	t.Helper()
	if secretValue == "" {
		secretValue = sim.TokenSecret
	}
	e := &simEnv{sim: sim, c: c, ids: newMemIDs(), key: testAuthorizedKey(t)}
	p, err := New(c, e.key, Options{
		IDs: e.ids,
		Secrets: secret.Resolver{Getenv: func(k string) string {
			return map[string]string{"PM_TOKEN": secretValue, "PM_PASSWORD": sim.Password}[k]
		}},
		Logger:  testLogger(t),
		RootCAs: sim.RootCAs,
		Poll:    5 * time.Millisecond, MaxPoll: 40 * time.Millisecond,
		Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, Attempts: 15},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	if e.specs, err = c.Nodes(); err != nil {
		t.Fatal(err)
	}
	return e
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KTHW_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// kthwVMs returns the simulator's non-template, non-foreign VMs by name.
func kthwVMs(sim *pvesim.Sim) map[string][]pvesim.VMState {
	out := map[string][]pvesim.VMState{}
	for _, v := range sim.VMs() {
		if v.Template || v.Foreign {
			continue
		}
		out[v.Config["name"]] = append(out[v.Config["name"]], v)
	}
	return out
}

func vmid(t testing.TB, id string) int {
	t.Helper()
	n, err := strconv.Atoi(id)
	if err != nil {
		t.Fatalf("VMID %q: %v", id, err)
	}
	return n
}

func (e *simEnv) spec(t testing.TB, name string) config.NodeSpec {
	t.Helper()
	for _, s := range e.specs {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no node %s", name)
	return config.NodeSpec{}
}

func describeCalls(sim *pvesim.Sim) string {
	var b strings.Builder
	for k, v := range sim.Calls() {
		fmt.Fprintf(&b, "  %s: %d\n", k, v)
	}
	return b.String()
}
