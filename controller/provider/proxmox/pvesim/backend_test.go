package pvesim_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// recordingBackend records the calls and reports one NIC with a fixed
// address.
type recordingBackend struct {
	mu    sync.Mutex
	calls []string
	infos map[int]pvesim.VMInfo
	fail  error
}

func (b *recordingBackend) Start(_ context.Context, vm pvesim.VMInfo) (pvesim.GuestInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, fmt.Sprintf("start %d", vm.VMID))
	if b.infos == nil {
		b.infos = map[int]pvesim.VMInfo{}
	}
	b.infos[vm.VMID] = vm
	if b.fail != nil {
		return pvesim.GuestInfo{}, b.fail
	}
	return pvesim.GuestInfo{Interfaces: []pvesim.GuestInterface{{
		Name: "eth7", MAC: strings.ToLower(vm.MAC), Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/24")},
	}}}, nil
}

func (b *recordingBackend) Stop(_ context.Context, vmid int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, fmt.Sprintf("stop %d", vmid))
	return nil
}

func (b *recordingBackend) Destroy(_ context.Context, vmid int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, fmt.Sprintf("destroy %d", vmid))
	return nil
}

func (b *recordingBackend) started(vmid int) pvesim.VMInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.infos[vmid]
}

func (b *recordingBackend) count(op string, vmid int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if c == fmt.Sprintf("%s %d", op, vmid) {
			n++
		}
	}
	return n
}

func TestDefaultBackend(t *testing.T) {
	gi, err := pvesim.DefaultBackend{}.Start(context.Background(), pvesim.VMInfo{
		VMID: 101, MAC: "BC:24:11:3A:5F:01", Address: netip.MustParsePrefix("10.0.0.21/24"), HasCloudInit: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(gi.Interfaces) != 1 {
		t.Fatalf("interfaces = %+v", gi.Interfaces)
	}
	i := gi.Interfaces[0]
	if i.MAC != "bc:24:11:3a:5f:01" || len(i.Addresses) != 2 || i.Addresses[0].String() != "10.0.0.21/24" || i.Addresses[1].String() != "fe80::be24:11ff:fe3a:5f01/64" {
		t.Errorf("interface = %+v", i)
	}
	gi, _ = pvesim.DefaultBackend{}.Start(context.Background(), pvesim.VMInfo{VMID: 258, MAC: "BC:24:11:00:00:01", DHCP: true, HasCloudInit: true})
	if got := gi.Interfaces[0].Addresses[0].String(); got != "10.99.1.2/16" {
		t.Errorf("dhcp address = %s", got)
	}
}
