package proxmox

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kthw/kthw/controller/provider"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// loseAnswers carries out requests but loses the answer of the first n
// whose method and path match: the caller sees a connection error although
// Proxmox did the work.
type loseAnswers struct {
	base   http.RoundTripper
	method string
	suffix string
	mu     sync.Mutex
	n      int
}

func (l *loseAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := l.base.RoundTrip(r)
	if err != nil || r.Method != l.method || !strings.HasSuffix(r.URL.Path, l.suffix) {
		return res, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return res, err
	}
	l.n--
	res.Body.Close()
	return nil, errors.New("connection reset by peer")
}

func TestCloneAnswerLost(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	c := simCluster(t, sim)
	e := newSimProvider(t, c, sim, "")
	lose := &loseAnswers{method: "POST", suffix: "/clone", n: 1}
	e.p.o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { lose.base = rt; return lose }
	n, err := e.p.Ensure(ctx, e.spec(t, "cp-1"))
	if err != nil {
		t.Fatal(err)
	}
	if lose.n != 0 {
		t.Fatal("no answer was lost")
	}
	if got := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"); got != 1 {
		t.Fatalf("%d clone requests; the lost one's VM must be adopted, not cloned again", got)
	}
	if vms := kthwVMs(sim); len(vms) != 1 || len(vms["cp-1"]) != 1 || n.State != provider.StateRunning {
		t.Fatalf("VMs %v, node %+v", vms, n)
	}
}

func TestTaskStatusLost(t *testing.T) {
	ctx := context.Background()
	sim := pvesim.Start(t)
	e := newSimProvider(t, simCluster(t, sim), sim, "")
	// Every status poll of the clone task fails: the clone's outcome is
	// read from the VM instead.
	lose := &loseAnswers{method: "GET", suffix: "/status", n: 1000}
	e.p.o.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		lose.base = rt
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if strings.Contains(r.URL.Path, "/tasks/") && strings.Contains(r.URL.Path, "qmclone") {
				return lose.RoundTrip(r)
			}
			return rt.RoundTrip(r)
		})
	}
	if _, err := e.p.Ensure(ctx, e.spec(t, "cp-1")); err != nil {
		t.Fatal(err)
	}
	if got := sim.CallCount("POST /nodes/{node}/qemu/{vmid}/clone"); got != 1 || len(kthwVMs(sim)["cp-1"]) != 1 {
		t.Fatalf("%d clones, VMs %v", got, kthwVMs(sim))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
