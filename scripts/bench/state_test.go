package main

import (
	"slices"
	"strings"
	"testing"
)

func TestDiffStates(t *testing.T) {
	kthw := map[string][]string{"cp-1": {
		"file /etc/hosts regular file 644 root:root abc",
		"pkg containerd 1.6.20~ds1-1+deb12u3 ii ",
		"sysctl net.ipv4.ip_forward 1",
		"failed-unit systemd-user-sessions.service",
	}}
	ansible := map[string][]string{"cp-1": {
		"file /etc/hosts regular file 644 root:root abc",
		"pkg containerd 1.6.20~ds1-1+deb12u3 ii ",
		"pkg python3-apt 2.6.0 ii ",
		"sysctl net.ipv4.ip_forward 1",
	}}
	d := diffStates(kthw, ansible)
	if !d.same() {
		t.Fatalf("same() = false: %s", d)
	}
	if s := d.String(); !strings.Contains(s, "python3-apt") || !strings.Contains(s, "systemd-user-sessions") {
		t.Errorf("String() = %q: want the tool package and the failed unit named", s)
	}
	ansible["cp-1"][0] = "file /etc/hosts regular file 600 root:root abc"
	if d := diffStates(kthw, ansible); d.same() || len(d.onlyA) != 1 || len(d.onlyB) != 1 {
		t.Errorf("a mode difference: same=%v onlyA=%q onlyB=%q", d.same(), d.onlyA, d.onlyB)
	}
}

func TestRepOrder(t *testing.T) {
	for rep := range 6 {
		o := repOrder(rep)
		k, d := slices.Index(o, "kthw"), slices.Index(o, "direct")
		if len(o) != 3 || !slices.Contains(o, "ansible") || k < 0 || d < 0 || k-d != 1 && d-k != 1 {
			t.Errorf("repOrder(%d) = %q: want all three tools, kthw and direct adjacent", rep, o)
		}
	}
}
