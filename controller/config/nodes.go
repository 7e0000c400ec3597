package config

import (
	"fmt"
	"net/netip"
	"strconv"
)

// MaxPoolCount is the largest count a node pool may have (Kubernetes' tested
// limit of nodes per cluster).
const MaxPoolCount = 5000

// NodeSpec is one node of the cluster, as expanded from the pools.
type NodeSpec struct {
	Name string
	Role Role
	// Address is the node's address with network.nodeCIDR's prefix length,
	// e.g. 10.200.0.11/24.
	Address   netip.Prefix
	Cores     int
	MemoryMiB int
	DiskGiB   int
}

// Nodes expands the pools into a flat list of nodes, pool by pool in file
// order and within a pool in name order. Addresses are deterministic:
// every pinned address (pool addresses) is reserved first; every other node
// then takes, in order, the lowest free address of network.nodeCIDR from its
// FirstNodeHost-th address on, skipping the gateway and the broadcast
// address.
//
// Nodes expects SetDefaults to have been applied. It fails, with the same
// *FieldError values Validate reports, if the network or the pools are
// invalid.
func (c *Cluster) Nodes() ([]NodeSpec, error) {
	var e fieldErrs
	plan := checkNetwork(&e, c.Network)
	nodes := expand(&e, c.Pools, plan)
	if err := e.join(c); err != nil {
		return nil, err
	}
	specs := make([]NodeSpec, len(nodes))
	for i, n := range nodes {
		specs[i] = n.NodeSpec
	}
	return specs, nil
}

// netPlan is the parsed part of Network that node expansion needs.
type netPlan struct {
	node    netip.Prefix // masked; invalid if network.nodeCIDR is
	gateway netip.Addr   // invalid if network.gateway is
}

// expanded is a node and where it came from.
type expanded struct {
	NodeSpec
	pool     int
	namePath string // "nodes[0].name" or "nodes[0].names[1]"
}

// expand checks the pools and expands them into nodes. Pools that are too
// broken to expand contribute no nodes; addresses are left zero when the
// node network is invalid.
func expand(e *fieldErrs, pools []NodePool, plan netPlan) []expanded {
	var out []expanded
	for i, p := range pools {
		path := "nodes[" + strconv.Itoa(i) + "]"
		roleOK := p.Role == RoleControlPlane || p.Role == RoleWorker
		if !roleOK {
			if p.Role == "" {
				e.add(path+".role", "required: %s or %s", RoleControlPlane, RoleWorker)
			} else {
				e.add(path+".role", "unknown role %q: want %s or %s", p.Role, RoleControlPlane, RoleWorker)
			}
		}
		if p.Count < 0 {
			e.add(path+".count", "must not be negative, got %d", p.Count)
			continue
		}
		if p.Count > MaxPoolCount {
			e.add(path+".count", "must be at most %d, got %d", MaxPoolCount, p.Count)
			continue
		}
		for _, r := range []struct {
			field string
			v     int
		}{{"cores", p.Cores}, {"memoryMiB", p.MemoryMiB}, {"diskGiB", p.DiskGiB}} {
			if r.v <= 0 {
				e.add(path+"."+r.field, "must be positive, got %d", r.v)
			}
		}

		var names, namePaths []string
		switch {
		case len(p.Names) > 0:
			if p.Name != "" {
				e.add(path+".name", "exclusive with names; give a prefix or explicit names, not both")
			}
			if p.Count != len(p.Names) {
				e.add(path+".count", "is %d but names lists %d nodes", p.Count, len(p.Names))
			}
			for j, n := range p.Names {
				np := path + ".names[" + strconv.Itoa(j) + "]"
				if !isDNSLabel(n) {
					e.add(np, "node name %q is not a DNS label (lowercase letters, digits and '-', at most 63)", n)
				}
				names = append(names, n)
				namePaths = append(namePaths, np)
			}
		case p.Name == "":
			if roleOK && p.Count > 0 {
				e.add(path+".name", "required: give a name prefix or names")
			}
		default:
			last := p.Name + "-" + strconv.Itoa(max(p.Count, 1))
			if !isDNSLabel(p.Name) || !isDNSLabel(last) {
				e.add(path+".name", "prefix %q does not make DNS labels such as %q (lowercase letters, digits and '-', at most 63)", p.Name, last)
			}
			for j := 1; j <= p.Count; j++ {
				names = append(names, p.Name+"-"+strconv.Itoa(j))
				namePaths = append(namePaths, path+".name")
			}
		}
		if len(p.Addresses) > 0 && len(p.Addresses) != len(names) {
			e.add(path+".addresses", "lists %d addresses for %d nodes; give one per node or none", len(p.Addresses), len(names))
		}
		for j, n := range names {
			out = append(out, expanded{
				NodeSpec: NodeSpec{Name: n, Role: p.Role, Cores: p.Cores, MemoryMiB: p.MemoryMiB, DiskGiB: p.DiskGiB},
				pool:     i,
				namePath: namePaths[j],
			})
		}
	}

	seen := map[string]string{}
	for _, n := range out {
		if prev, ok := seen[n.Name]; ok {
			e.add(n.namePath, "duplicate node name %q (also from %s)", n.Name, prev)
			continue
		}
		seen[n.Name] = n.namePath
	}

	allocate(e, pools, out, plan)
	return out
}

// allocate assigns addresses to nodes: pinned ones first, then the rest in
// order from the FirstNodeHost-th address of the node network.
func allocate(e *fieldErrs, pools []NodePool, nodes []expanded, plan netPlan) {
	pfx := plan.node
	valid := pfx.IsValid()
	network, broadcast := netip.Addr{}, netip.Addr{}
	if valid {
		network, broadcast = pfx.Addr(), lastAddr(pfx)
	}

	// Pinned addresses, checked and reserved.
	used := map[netip.Addr]string{}
	pinned := make([][]netip.Addr, len(pools))
	for i, p := range pools {
		pinned[i] = make([]netip.Addr, len(p.Addresses))
		for j, s := range p.Addresses {
			path := fmt.Sprintf("nodes[%d].addresses[%d]", i, j)
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				e.add(path, "%q is not an IP address", s)
				continue
			}
			if !valid {
				continue // reported on network.nodeCIDR
			}
			switch {
			case !pfx.Contains(a):
				e.add(path, "%s is outside network.nodeCIDR %s", a, pfx)
				continue
			case a == network:
				e.add(path, "%s is the network address of %s", a, pfx)
				continue
			case a == broadcast:
				e.add(path, "%s is the broadcast address of %s", a, pfx)
				continue
			case plan.gateway.IsValid() && a == plan.gateway:
				e.add(path, "%s is network.gateway", a)
				continue
			}
			if prev, ok := used[a]; ok {
				e.add(path, "duplicate address %s (also %s)", a, prev)
				continue
			}
			used[a] = path
			pinned[i][j] = a
		}
	}
	if !valid {
		return
	}

	next := network
	for range FirstNodeHost {
		next = next.Next()
	}
	exhausted := false
	inPool := make([]int, len(pools)) // index of the next node of each pool
	for k := range nodes {
		n := &nodes[k]
		j := inPool[n.pool]
		inPool[n.pool]++
		if pins := pinned[n.pool]; j < len(pins) {
			if pins[j].IsValid() {
				n.Address = netip.PrefixFrom(pins[j], pfx.Bits())
			}
			continue
		}
		if exhausted {
			continue
		}
		for next.IsValid() && pfx.Contains(next) && (used[next] != "" || next == plan.gateway || next == broadcast) {
			next = next.Next()
		}
		if !next.IsValid() || !pfx.Contains(next) || next == broadcast {
			e.add(fmt.Sprintf("nodes[%d]", n.pool), "no free address in network.nodeCIDR %s for node %s (allocation starts at its address %d)", pfx, n.Name, FirstNodeHost)
			exhausted = true
			continue
		}
		n.Address = netip.PrefixFrom(next, pfx.Bits())
		used[next] = n.Name
		next = next.Next()
	}
}

// lastAddr is the last address of p (the broadcast address of an IPv4
// network).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		hostBits := len(b)*8 - p.Bits() - (len(b)-1-i)*8
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(1<<hostBits - 1)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
