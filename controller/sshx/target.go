// Package sshx is kthw-controller's SSH client plumbing on golang.org/x/crypto/ssh: parsing
// targets, dialing with strictly verified host keys (optionally through a jump host), and
// running remote commands with typed errors.
//
// Host keys are always verified against a known_hosts file. ClientConfig.HostKeyAlgorithms is
// restricted to the key types known for the host, so a server that also has another key type
// cannot make a known host look changed (the classic x/crypto/ssh pitfall). Unknown hosts are
// accepted only when Options.AcceptNew is set; a changed key is never accepted.
package sshx

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// DefaultPort is the SSH port used when a target does not name one.
const DefaultPort = 22

// Target is an SSH endpoint: the user to log in as and the host and port to connect to.
type Target struct {
	User string
	Host string
	Port int
}

// ParseTarget parses "[user@]host[:port]". IPv6 addresses with a port go in brackets
// ("[fd00::5]:2222"); a bare IPv6 address without a port is accepted too. The user defaults
// to $USER (or "root" when unset) and the port to 22.
func ParseTarget(s string) (Target, error) {
	orig := s
	t := Target{Port: DefaultPort}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		t.User, s = s[:i], s[i+1:]
		if t.User == "" {
			return Target{}, fmt.Errorf("parse target %q: empty user", orig)
		}
	} else {
		t.User = defaultUser()
	}
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return Target{}, fmt.Errorf("parse target %q: missing ']'", orig)
		}
		t.Host, s = s[1:end], s[end+1:]
		if s != "" {
			if !strings.HasPrefix(s, ":") {
				return Target{}, fmt.Errorf("parse target %q: unexpected %q after ']'", orig, s)
			}
			p, err := parsePort(s[1:])
			if err != nil {
				return Target{}, fmt.Errorf("parse target %q: %w", orig, err)
			}
			t.Port = p
		}
	case strings.Count(s, ":") > 1:
		t.Host = s // bare IPv6 without a port
	case strings.Contains(s, ":"):
		host, port, _ := strings.Cut(s, ":")
		p, err := parsePort(port)
		if err != nil {
			return Target{}, fmt.Errorf("parse target %q: %w", orig, err)
		}
		t.Host, t.Port = host, p
	default:
		t.Host = s
	}
	if t.Host == "" {
		return Target{}, fmt.Errorf("parse target %q: empty host", orig)
	}
	if strings.ContainsAny(t.Host, " \t/@[]") {
		return Target{}, fmt.Errorf("parse target %q: invalid host %q", orig, t.Host)
	}
	return t, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return p, nil
}

func defaultUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

// withDefaults fills an empty user and a zero port.
func (t Target) withDefaults() Target {
	if t.User == "" {
		t.User = defaultUser()
	}
	if t.Port == 0 {
		t.Port = DefaultPort
	}
	return t
}

// Addr returns "host:port" (IPv6 in brackets), the form net.Dial expects.
func (t Target) Addr() string {
	port := t.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(port))
}

// String returns "user@host:port"; ParseTarget(t.String()) == t.
func (t Target) String() string {
	if t.User == "" {
		return t.Addr()
	}
	return t.User + "@" + t.Addr()
}
