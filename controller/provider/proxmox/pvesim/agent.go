package pvesim

import (
	"encoding/base64"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// agentVM is assert_agent_available: the VM exists, has an agent option,
// runs, and its agent answers. Callers hold s.mu.
func (s *Server) agentVM(req *request) (*vm, error) {
	v, err := s.loadVM(req.vars["node"], req.vmid())
	if err != nil {
		return nil, err
	}
	if _, ok := v.conf["agent"]; !ok {
		return nil, die("No QEMU guest agent configured")
	}
	if !v.running {
		return nil, die("VM %d is not running", v.id)
	}
	if v.noAgent && !s.faults.agentMissing(v.id) {
		if p, ok := s.backend.(AgentProber); ok {
			ctx, cancel := s.backendContext()
			installed := p.GuestAgentInstalled(ctx, v.id)
			cancel()
			if installed {
				s.guestAgentInstalled(v)
			}
		}
	}
	if !agentEnabled(v.conf["agent"]) || v.noAgent || s.faults.agentMissing(v.id) || time.Now().Before(v.agentAt) {
		return nil, die("QEMU guest agent is not running")
	}
	return v, nil
}

// agentCmd serves POST/GET .../agent/{command}: {"result": ...}.
func (s *Server) agentCmd(cmd string) func(*request) (any, error) {
	return func(req *request) (any, error) {
		if err := validate(req.params, map[string]pspec{}); err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		v, err := s.agentVM(req)
		if err != nil {
			return nil, err
		}
		var res any
		switch cmd {
		case "ping":
			res = map[string]any{}
		case "network-get-interfaces":
			res = s.agentInterfaces(v)
		case "get-osinfo":
			res = map[string]any{
				"id": "debian", "name": "Debian GNU/Linux", "pretty-name": "Debian GNU/Linux 12 (bookworm)",
				"version": "12 (bookworm)", "version-id": "12", "machine": "x86_64",
				"kernel-release": "6.1.0-25-cloud-amd64",
				"kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.106-3 (2024-08-26)",
			}
		case "get-host-name":
			h := v.guest.Hostname
			if h == "" {
				h = v.conf["name"]
			}
			res = map[string]any{"host-name": h}
		case "info":
			res = map[string]any{"version": "7.2.11", "supported_commands": []map[string]any{
				{"name": "guest-ping", "enabled": true, "success-response": true},
				{"name": "guest-network-get-interfaces", "enabled": true, "success-response": true},
				{"name": "guest-get-osinfo", "enabled": true, "success-response": true},
				{"name": "guest-get-host-name", "enabled": true, "success-response": true},
				{"name": "guest-file-open", "enabled": !s.faults.AgentFileReadBlocked, "success-response": true},
				{"name": "guest-file-read", "enabled": !s.faults.AgentFileReadBlocked, "success-response": true},
				{"name": "guest-file-close", "enabled": !s.faults.AgentFileReadBlocked, "success-response": true},
			}}
		case "get-time":
			res = time.Now().UnixNano()
		}
		return map[string]any{"result": res}, nil
	}
}

// agentInterfaces is what guest-network-get-interfaces answers: lo first,
// then the guest's NICs; before AgentIPDelay passed only link-local IPv6.
func (s *Server) agentInterfaces(v *vm) []map[string]any {
	out := []map[string]any{{
		"name":             "lo",
		"hardware-address": "00:00:00:00:00:00",
		"ip-addresses": []map[string]any{
			{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
			{"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
		},
		"statistics": stats(0),
	}}
	early := time.Now().Before(v.ipAt)
	for i, gi := range v.guest.Interfaces {
		addrs := []map[string]any{}
		for _, p := range gi.Addresses {
			if early && !p.Addr().IsLinkLocalUnicast() {
				continue
			}
			addrs = append(addrs, ipEntry(p))
		}
		e := map[string]any{"name": gi.Name, "hardware-address": gi.MAC, "statistics": stats(i + 1)}
		if len(addrs) > 0 {
			e["ip-addresses"] = addrs
		}
		out = append(out, e)
	}
	return out
}

func ipEntry(p netip.Prefix) map[string]any {
	typ := "ipv4"
	if p.Addr().Is6() && !p.Addr().Is4In6() {
		typ = "ipv6"
	}
	return map[string]any{"ip-address-type": typ, "ip-address": strings.TrimSpace(p.Addr().String()), "prefix": p.Bits()}
}

func stats(n int) map[string]any {
	return map[string]any{
		"rx-bytes": 1_024_000 * n, "rx-dropped": 0, "rx-errs": 0, "rx-packets": 900 * n,
		"tx-bytes": 512_000 * n, "tx-dropped": 0, "tx-errs": 0, "tx-packets": 700 * n,
	}
}

// maxFileRead is qemu-server's $MAX_READ_SIZE for agent/file-read.
const maxFileRead = 16 << 20

// agentFileRead is GET .../agent/file-read?file=PATH (qemu-server's
// PVE::API2::Qemu::Agent file-read): the guest agent opens the file
// (guest-file-open), reads it in chunks (guest-file-read) up to 16 MiB and
// closes it. The answer is {"content": ..., "bytes-read": N} plus
// "truncated": 1 when the reads did not reach the end of the file. A file
// the guest does not have fails as the agent's open does: 500 "Agent
// error: Failed to open file '<path>': No such file or directory".
// count, offset and decode (base64 content) exist from Proxmox VE 9 on;
// earlier versions refuse them as parameters not in the schema.
func (s *Server) agentFileRead(req *request) (any, error) {
	specs := map[string]pspec{"file": {typ: tString}}
	if s.pveMajor >= 9 {
		specs["count"] = pspec{typ: tInt, optional: true, min: bound(1), max: bound(maxFileRead)}
		specs["offset"] = pspec{typ: tInt, optional: true, min: bound(0)}
		specs["decode"] = pspec{typ: tBool, optional: true}
	}
	if err := validate(req.params, specs); err != nil {
		return nil, err
	}
	count, offset, decode := maxFileRead, 0, true
	if v, ok := req.param("count"); ok {
		count, _ = strconv.Atoi(v)
	}
	if v, ok := req.param("offset"); ok {
		offset, _ = strconv.Atoi(v)
	}
	if _, ok := req.param("decode"); ok {
		decode = req.boolean("decode")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentVM(req)
	if err != nil {
		return nil, err
	}
	file := req.str("file")
	if s.faults.AgentFileReadBlocked {
		// qemu-ga started with --block-rpcs=guest-file-open,...
		return nil, die("Agent error: Command guest-file-open has been disabled")
	}
	content, ok := v.guest.Files[file]
	if !ok {
		return nil, die("Agent error: Failed to open file '%s': No such file or directory", file)
	}
	data := []byte(content)
	data = data[min(offset, len(data)):]
	// qemu-server reads chunks until count bytes are read or a read
	// reports EOF, which qemu-ga does only for a read that came up short:
	// reading exactly what is left does not reach EOF.
	n := min(count, len(data))
	eof := len(data) < count
	data = data[:n]
	out := map[string]any{"bytes-read": n}
	if decode {
		out["content"] = string(data)
	} else {
		out["content"] = base64.StdEncoding.EncodeToString(data)
	}
	if !eof {
		out["truncated"] = 1
	}
	return out, nil
}

// guestAgentInstalled records that a running VM's guest now has
// qemu-guest-agent: it answers from now on, and the boot disk carries it
// (a template made from the disk, and its clones, have it). Callers hold
// s.mu.
func (s *Server) guestAgentInstalled(v *vm) {
	v.noAgent = false
	v.agentAt = time.Time{}
	for _, d := range bootOrder(v.conf) {
		val, ok := v.conf[d]
		if !ok || !isDriveKey(d) || isCDROM(val) || isCloudInitDrive(val) {
			continue
		}
		if vol := s.findVolume(v.node, parseDrive(val).file); vol != nil {
			vol.noGuestAgent = false
		}
		return
	}
}
