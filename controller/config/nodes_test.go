package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestDefault(t *testing.T) {
	c := Default("rocky")
	if c.Name != "lab" || c.Profile != "rocky" || c.Provider.Type != ProviderLocal ||
		c.Provider.Local == nil || c.Provider.Local.Bridge != "kthw0" || c.Provider.Local.LabDir != "/var/lib/kthw/lab" {
		t.Errorf("Default() = %+v", c)
	}
	wantNet := Network{NodeCIDR: "10.200.0.0/24", Gateway: "10.200.0.1", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/12", DNSDomain: "cluster.local"}
	if c.Network != wantNet {
		t.Errorf("Default().Network = %+v; want %+v", c.Network, wantNet)
	}
	if err := c.Validate(nil); err != nil {
		t.Fatalf("Validate() error: %v", err)
	}
	nodes, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	want := []NodeSpec{
		{Name: "cp-1", Role: RoleControlPlane, Address: netip.MustParsePrefix("10.200.0.11/24"), Cores: 2, MemoryMiB: 2048, DiskGiB: 20},
		{Name: "worker-1", Role: RoleWorker, Address: netip.MustParsePrefix("10.200.0.12/24"), Cores: 2, MemoryMiB: 2048, DiskGiB: 20},
		{Name: "worker-2", Role: RoleWorker, Address: netip.MustParsePrefix("10.200.0.13/24"), Cores: 2, MemoryMiB: 2048, DiskGiB: 20},
	}
	if !reflect.DeepEqual(nodes, want) {
		t.Errorf("Nodes() = %v; want %v", nodes, want)
	}
}

func TestNodesAllocation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Cluster)
		want   []string
	}{
		{"pinned addresses are reserved before allocation", func(c *Cluster) {
			c.Pools[1].Addresses = []string{"10.200.0.11", "10.200.0.13"}
		}, []string{"cp-1@10.200.0.12/24", "worker-1@10.200.0.11/24", "worker-2@10.200.0.13/24"}},
		{"gateway is skipped", func(c *Cluster) {
			c.Network.Gateway = "10.200.0.12"
		}, []string{"cp-1@10.200.0.11/24", "worker-1@10.200.0.13/24", "worker-2@10.200.0.14/24"}},
		{"explicit names and other prefix length", func(c *Cluster) {
			c.Network.NodeCIDR = "172.16.0.0/16"
			c.Network.Gateway = "172.16.0.1"
			c.Pools[0] = NodePool{Names: []string{"alpha", "beta", "gamma"}, Role: RoleControlPlane}
			c.SetDefaults()
		}, []string{"alpha@172.16.0.11/16", "beta@172.16.0.12/16", "gamma@172.16.0.13/16", "worker-1@172.16.0.14/16", "worker-2@172.16.0.15/16"}},
		{"allocation crosses an octet", func(c *Cluster) {
			c.Network.NodeCIDR = "10.1.0.0/23"
			c.Network.Gateway = "10.1.0.1"
			c.Network.PodCIDR = "10.64.0.0/14"
			c.Pools[1].Count = 250
		}, nil},
		{"empty pool", func(c *Cluster) { c.Pools[1].Count = 0 }, []string{"cp-1@10.200.0.11/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default("debian")
			tt.mutate(c)
			if err := c.Validate(nil); err != nil {
				t.Fatalf("Validate() error: %v", err)
			}
			nodes, err := c.Nodes()
			if err != nil {
				t.Fatalf("Nodes() error: %v", err)
			}
			if tt.want == nil {
				// 10.1.0.11 ... 10.1.0.255, 10.1.1.0 ... for 251 nodes.
				if last := nodes[len(nodes)-1]; last.Address.String() != "10.1.1.5/23" {
					t.Errorf("last node %s; want address 10.1.1.5/23", last.Address)
				}
				return
			}
			var got []string
			for _, n := range nodes {
				got = append(got, n.Name+"@"+n.Address.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Nodes() = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestNodesDeterministic(t *testing.T) {
	first, err := Default("debian").Nodes()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, _ := Default("debian").Nodes()
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("Nodes() differs between runs: %v vs %v", first, again)
		}
	}
}

func TestNodesInvalid(t *testing.T) {
	c := Default("debian")
	c.Network.NodeCIDR = "10.200.0.0/33"
	_, err := c.Nodes()
	fes := FieldErrors(err)
	if len(fes) != 1 || fes[0].Path != "network.nodeCIDR" {
		t.Fatalf("Nodes() error = %v; want one network.nodeCIDR error", err)
	}
	// Profiles do not matter to Nodes.
	c = Default("no-such-profile")
	if _, err := c.Nodes(); err != nil {
		t.Fatalf("Nodes() error = %v; want nil", err)
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.200.0.0/24": "10.200.0.255",
		"10.0.0.0/8":    "10.255.255.255",
		"10.1.0.0/23":   "10.1.1.255",
		"10.1.2.0/30":   "10.1.2.3",
		"10.1.2.3/32":   "10.1.2.3",
		"0.0.0.0/0":     "255.255.255.255",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s; want %s", in, got, want)
		}
	}
}

func TestParentPath(t *testing.T) {
	var chain []string
	for p := "nodes[1].addresses[0]"; p != ""; p = parentPath(p) {
		chain = append(chain, p)
	}
	if got := strings.Join(chain, " > "); got != "nodes[1].addresses[0] > nodes[1].addresses > nodes[1] > nodes" {
		t.Errorf("parent chain = %s", got)
	}
}
