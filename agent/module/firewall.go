package module

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Firewall)(nil)

// Firewall opens ports in the node's host firewall: ufw (Ubuntu) or
// firewalld (Rocky, SUSE). It works only with a firewall that is installed
// and running: it never installs, enables or starts one, and a node without
// one is reported and left alone.
type Firewall struct {
	tool  string
	ports []fwPort
}

type fwPort struct {
	port, proto, comment string
}

// Firewall tools.
const (
	ToolUFW       = "ufw"
	ToolFirewalld = "firewalld"
)

var firewallBinaries = map[string]string{ToolUFW: "/usr/sbin/ufw", ToolFirewalld: "/usr/bin/firewall-cmd"}

// NewFirewall validates m.
func NewFirewall(m *agentv1.FirewallModule) (*Firewall, error) {
	f := &Firewall{tool: m.GetTool()}
	if f.tool != "" && f.tool != ToolUFW && f.tool != ToolFirewalld {
		return nil, fmt.Errorf("%w: firewall tool %q: want ufw or firewalld", ErrInvalid, f.tool)
	}
	if len(m.GetPorts()) == 0 {
		return nil, fmt.Errorf("%w: firewall: no ports", ErrInvalid)
	}
	for i, p := range m.GetPorts() {
		if !validPortSpec(p.GetPort()) {
			return nil, fmt.Errorf("%w: firewall ports[%d]: %q is not a port or a range like 30000-32767", ErrInvalid, i, p.GetPort())
		}
		proto := p.GetProtocol()
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("%w: firewall ports[%d]: protocol %q: want tcp or udp", ErrInvalid, i, proto)
		}
		if strings.ContainsAny(p.GetComment(), "'\"\n") {
			return nil, fmt.Errorf("%w: firewall ports[%d]: comment must not contain quotes or newlines", ErrInvalid, i)
		}
		f.ports = append(f.ports, fwPort{port: p.GetPort(), proto: proto, comment: p.GetComment()})
	}
	return f, nil
}

func validPortSpec(s string) bool {
	lo, hi, isRange := strings.Cut(s, "-")
	if !validPort(lo) || (isRange && !validPort(hi)) {
		return false
	}
	return !isRange || atoi(lo) < atoi(hi)
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	n := atoi(s)
	return n >= 1 && n <= 65535
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// Check reports the ports that would be opened.
func (f *Firewall) Check(ctx context.Context, env *Env) (Result, error) {
	return f.run(ctx, env, false)
}

// Apply opens the missing ports.
func (f *Firewall) Apply(ctx context.Context, env *Env) (Result, error) { return f.run(ctx, env, true) }

func (f *Firewall) run(ctx context.Context, env *Env, apply bool) (Result, error) {
	tool, why := f.activeTool(ctx, env)
	if tool == "" {
		return Result{SkippedReason: why}, nil
	}
	open, saved, err := openPorts(ctx, env, tool)
	if err != nil {
		return Result{}, err
	}
	var missing []fwPort
	var d diffBuilder
	for _, p := range f.ports {
		if !slices.Contains(open, p.port+"/"+p.proto) {
			missing = append(missing, p)
			d.line(fmt.Sprintf("%s: open %s/%s (%s)", tool, p.port, p.proto, p.comment))
		}
	}
	if len(missing) == 0 {
		env.info(fmt.Sprintf("%s: all %d ports already open", tool, len(f.ports)))
		return Result{}, nil
	}
	res := Result{Changed: true, Diff: d.String()}
	if !apply {
		return res, nil
	}
	r := env.cmdRunner()
	for _, p := range missing {
		var argv []string
		switch tool {
		case ToolUFW:
			argv = []string{"ufw", "allow", strings.Replace(p.port, "-", ":", 1) + "/" + p.proto}
			if p.comment != "" {
				argv = append(argv, "comment", p.comment)
			}
		case ToolFirewalld:
			if slices.Contains(saved, p.port+"/"+p.proto) {
				continue // saved, not yet loaded: the reload below opens it
			}
			argv = []string{"firewall-cmd", "--permanent", "--add-port=" + p.port + "/" + p.proto}
		}
		if _, err := r.Run(ctx, argv, nil, nil); err != nil {
			return res, fmt.Errorf("open %s/%s with %s: %w", p.port, p.proto, tool, err)
		}
	}
	if tool == ToolFirewalld {
		if _, err := r.Run(ctx, []string{"firewall-cmd", "--reload"}, nil, nil); err != nil {
			return res, fmt.Errorf("reload firewalld: %w", err)
		}
	}
	return res, nil
}

// activeTool returns the firewall to configure, or "" and why none.
func (f *Firewall) activeTool(ctx context.Context, env *Env) (string, string) {
	tools := []string{ToolUFW, ToolFirewalld}
	if f.tool != "" {
		tools = []string{f.tool}
	}
	var notes []string
	for _, tool := range tools {
		if _, err := os.Stat(env.Path(firewallBinaries[tool])); err != nil {
			notes = append(notes, tool+" is not installed")
			continue
		}
		active, err := firewallActive(ctx, env, tool)
		if err != nil {
			notes = append(notes, err.Error())
			continue
		}
		if !active {
			notes = append(notes, tool+" is not running")
			continue
		}
		return tool, ""
	}
	return "", "no active host firewall (" + strings.Join(notes, ", ") + "); nothing to open"
}

func firewallActive(ctx context.Context, env *Env, tool string) (bool, error) {
	r := env.cmdRunner()
	switch tool {
	case ToolUFW:
		out, err := r.Run(ctx, []string{"ufw", "status"}, nil, nil)
		if err != nil {
			return false, fmt.Errorf("ufw status: %w", err)
		}
		return strings.Contains(string(out), "Status: active"), nil
	default:
		// firewall-cmd --state prints "running", or "not running" and
		// exits 252.
		out, err := r.Run(ctx, []string{"firewall-cmd", "--state"}, nil, nil)
		switch state := strings.TrimSpace(string(out)); {
		case state == "running":
			return true, nil
		case strings.Contains(state, "not running"):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("firewall-cmd --state: %w", err)
		default:
			return false, fmt.Errorf("firewall-cmd --state: unexpected answer %q", state)
		}
	}
}

// openPorts lists the ports that are open, as "port/proto"
// ("30000-32767/tcp"), and those saved to stay open. ufw opens a port and
// saves it in one step. firewalld's ports are added to its permanent
// configuration and opened by its reload: a port counts as open only when
// it is in both, so a run that stopped between the two is finished by the
// next one.
func openPorts(ctx context.Context, env *Env, tool string) (open, saved []string, err error) {
	r := env.cmdRunner()
	switch tool {
	case ToolUFW:
		b, err := r.Run(ctx, []string{"ufw", "show", "added"}, nil, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("ufw show added: %w", err)
		}
		// "ufw allow 6443/tcp comment 'kube-apiserver'"
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "ufw" && f[1] == "allow" {
				open = append(open, strings.Replace(f[2], ":", "-", 1))
			}
		}
		return open, open, nil
	case ToolFirewalld:
		b, err := r.Run(ctx, []string{"firewall-cmd", "--permanent", "--list-ports"}, nil, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("firewall-cmd --permanent --list-ports: %w", err)
		}
		saved = strings.Fields(string(b))
		b, err = r.Run(ctx, []string{"firewall-cmd", "--list-ports"}, nil, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("firewall-cmd --list-ports: %w", err)
		}
		for _, p := range strings.Fields(string(b)) {
			if slices.Contains(saved, p) {
				open = append(open, p)
			}
		}
		return open, saved, nil
	}
	return nil, nil, fmt.Errorf("list open ports: unknown firewall tool %q", tool)
}
