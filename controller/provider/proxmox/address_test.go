package proxmox

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	pve "github.com/luthermonson/go-proxmox"
)

func TestSameMAC(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"BC:24:11:3A:5F:01", "bc:24:11:3a:5f:01", true},
		{"bc-24-11-3a-5f-01", "BC:24:11:3A:5F:01", true},
		{"BC:24:11:3A:5F:01", "BC:24:11:3A:5F:02", false},
		{"", "", false},
		{"00:00:00:00:00:00", "not a mac", false},
	} {
		if got := sameMAC(tt.a, tt.b); got != tt.want {
			t.Errorf("sameMAC(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestGuestAddresses(t *testing.T) {
	// What network-get-interfaces answers (go-proxmox drops lo): the
	// agent writes MACs lowercase.
	const answer = `[
	 {"name":"ens18","hardware-address":"bc:24:11:3a:5f:01","ip-addresses":[
	   {"ip-address-type":"ipv6","ip-address":"fe80::be24:11ff:fe3a:5f01","prefix":64},
	   {"ip-address-type":"ipv4","ip-address":"169.254.10.1","prefix":16},
	   {"ip-address-type":"ipv4","ip-address":"10.200.0.11","prefix":24},
	   {"ip-address-type":"ipv4","ip-address":"10.200.0.99","prefix":24}]},
	 {"name":"cni0","hardware-address":"aa:bb:cc:dd:ee:ff","ip-addresses":[
	   {"ip-address-type":"ipv4","ip-address":"10.244.0.1","prefix":24}]},
	 {"name":"ens19","hardware-address":"bc:24:11:3a:5f:02","ip-addresses":[
	   {"ip-address-type":"ipv4","ip-address":"192.168.1.5","prefix":24}]},
	 {"name":"weird","hardware-address":"bc:24:11:3a:5f:01"}
	]`
	var ifaces []*pve.AgentNetworkIface
	if err := json.Unmarshal([]byte(answer), &ifaces); err != nil {
		t.Fatal(err)
	}
	got := GuestAddresses(ifaces, "BC:24:11:3A:5F:01")
	want := []netip.Addr{netip.MustParseAddr("10.200.0.11"), netip.MustParseAddr("10.200.0.99")}
	if !slices.Equal(got, want) {
		t.Fatalf("GuestAddresses = %v, want %v", got, want)
	}
	if got := GuestAddresses(ifaces, "BC:24:11:00:00:00"); len(got) != 0 {
		t.Fatalf("addresses of an unknown MAC: %v", got)
	}
	if got := GuestAddresses(nil, "BC:24:11:3A:5F:01"); len(got) != 0 {
		t.Fatalf("addresses without interfaces: %v", got)
	}
}
