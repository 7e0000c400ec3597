package state

import (
	"net/netip"
	"testing"
)

func TestPinnedAddr(t *testing.T) {
	addr := netip.MustParsePrefix("10.200.0.11/24")
	for _, tc := range []struct {
		n    Node
		want string
	}{
		{Node{PinnedAt: "[fd00::5]:2222", HostKey: "k", Address: addr}, "[fd00::5]:2222"},
		{Node{HostKey: "k", Address: addr}, "10.200.0.11:22"},
		{Node{Address: addr}, ""},
		{Node{HostKey: "k"}, ""},
	} {
		if got := tc.n.PinnedAddr(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.n, got, tc.want)
		}
	}
}
