package module

import (
	"context"
	"errors"
	"strings"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

const debianHosts = `127.0.0.1	localhost
127.0.1.1	debian

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
`

// newHostname returns the module with the running host name faked.
func newHostname(t *testing.T, m *agentv1.HostnameModule, running *string) *Hostname {
	t.Helper()
	h, err := NewHostname(m)
	if err != nil {
		t.Fatalf("NewHostname: %v", err)
	}
	h.current = func() (string, error) { return *running, nil }
	h.set = func(ctx context.Context, env *Env, name string) error { *running = name; return nil }
	return h
}

func hostEntries(kv ...string) []*agentv1.HostnameModule_Host {
	var out []*agentv1.HostnameModule_Host
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &agentv1.HostnameModule_Host{Address: kv[i], Names: strings.Fields(kv[i+1])})
	}
	return out
}

func TestHostname(t *testing.T) {
	env := newRecorder(t, "")
	env.write(t, "/etc/hostname", "debian\n", 0o644)
	env.write(t, "/etc/hosts", debianHosts, 0o644)
	running := "debian"
	h := newHostname(t, &agentv1.HostnameModule{
		Hostname: "node-1",
		Hosts:    hostEntries("10.200.0.11", "node-1 node-1.lab", "10.200.0.12", "node-2", "fd00::13", "node-3"),
	}, &running)

	res := prepRun(t, "Check", h.Check, &env.Env)
	if running != "debian" || env.readFile(t, "/etc/hostname") != "debian\n" {
		t.Fatal("Check changed something")
	}
	res = prepRun(t, "Apply", h.Apply, &env.Env)
	t.Run("diff", func(t *testing.T) { prepGolden(t, res.Diff) })
	t.Run("hosts", func(t *testing.T) { prepGolden(t, env.readFile(t, "/etc/hosts")) })
	if running != "node-1" || env.readFile(t, "/etc/hostname") != "node-1\n" {
		t.Errorf("running %q, /etc/hostname %q", running, env.readFile(t, "/etc/hostname"))
	}
	if res := prepRun(t, "second Apply", h.Apply, &env.Env); res.Changed || res.Diff != "" {
		t.Errorf("second Apply = %+v", res)
	}

	// Lines after the block stay where they are when it changes.
	env.write(t, "/etc/hosts", env.readFile(t, "/etc/hosts")+"192.0.2.1 added-by-hand\n", 0o644)
	h2 := newHostname(t, &agentv1.HostnameModule{Hostname: "node-1", Hosts: hostEntries("10.200.0.11", "node-1")}, &running)
	res = prepRun(t, "Apply with fewer hosts", h2.Apply, &env.Env)
	t.Run("replaced", func(t *testing.T) { prepGolden(t, env.readFile(t, "/etc/hosts")) })

	h3 := newHostname(t, &agentv1.HostnameModule{Hostname: "node-1"}, &running)
	prepRun(t, "Apply without hosts", h3.Apply, &env.Env)
	if got, want := env.readFile(t, "/etc/hosts"), debianHosts+"192.0.2.1 added-by-hand\n"; got != want {
		t.Errorf("hosts without entries =\n%s\nwant\n%s", got, want)
	}
}

func TestWithHostsBlock(t *testing.T) {
	block := HostsBegin + "\n10.0.0.1\tn1\n" + HostsEnd + "\n"
	tests := []struct {
		name, cur, block, want, err string
	}{
		{"empty file", "", block, block, ""},
		{"no final newline", "127.0.0.1 localhost", block, "127.0.0.1 localhost\n" + block, ""},
		{"replace in the middle", "a\n# BEGIN kthw\nold\n# END kthw\nb\n", block, "a\n" + block + "b\n", ""},
		{"remove", "a\n# BEGIN kthw\nold\n# END kthw\nb\n", "", "a\nb\n", ""},
		{"nothing to remove", "a\n", "", "a\n", ""},
		{"begin without end", "# BEGIN kthw\nx\n", block, "", "without"},
		{"end without begin", "x\n# END kthw\n", block, "", "without"},
		{"two begins", "# BEGIN kthw\n# BEGIN kthw\n# END kthw\n", block, "", "two"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := withHostsBlock(tt.cur, tt.block)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNewHostnameInvalid(t *testing.T) {
	for name, m := range map[string]*agentv1.HostnameModule{
		"nothing":      {},
		"underscore":   {Hostname: "node_1"},
		"too long":     {Hostname: strings.Repeat("a", 65)},
		"leading dash": {Hostname: "-node"},
		"bad address":  {Hostname: "n", Hosts: hostEntries("10.0.0.300", "x")},
		"no names":     {Hostname: "n", Hosts: []*agentv1.HostnameModule_Host{{Address: "10.0.0.1"}}},
		"bad name":     {Hostname: "n", Hosts: hostEntries("10.0.0.1", "a/b")},
	} {
		if _, err := NewHostname(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSetRunningHostnameRefusesRoot(t *testing.T) {
	env := newRecorder(t, "")
	if err := setRunningHostname(context.Background(), &env.Env, "x"); err == nil {
		t.Fatal("set the machine's host name under a root prefix")
	}
}
