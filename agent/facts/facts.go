// Package facts describes the node the agent runs on: OS release, kernel,
// hardware, addresses, package manager and init system.
//
// Every file is read under a root prefix so tests can point it at a
// temporary directory; what the kernel reports directly (uname, network
// interfaces, CPU count) is the host's.
package facts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"golang.org/x/sys/unix"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// probeTimeout bounds the D-Bus probe of systemd.
const probeTimeout = 3 * time.Second

// Gather collects the facts of the node whose filesystem is at root ("" is /).
func Gather(ctx context.Context, root string) (*agentv1.FactsResponse, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, fmt.Errorf("uname: %w", err)
	}
	f := &agentv1.FactsResponse{
		Kernel:         unix.ByteSliceToString(uts.Release[:]),
		Arch:           unix.ByteSliceToString(uts.Machine[:]),
		Hostname:       unix.ByteSliceToString(uts.Nodename[:]),
		Cpus:           int32(runtime.NumCPU()),
		PackageManager: packageManager(root),
		InitSystem:     InitSystem(root),
	}
	var err error
	if f.Os, err = readOSRelease(root); err != nil {
		return nil, err
	}
	if f.MemoryBytes, err = memTotal(root); err != nil {
		return nil, err
	}
	if f.Addresses, err = addresses(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := SystemdRunning(root); err != nil {
		f.SystemdDetail = err.Error()
	} else if err := probeSystemd(ctx); err != nil {
		f.SystemdDetail = err.Error()
	} else {
		f.SystemdUsable = true
	}
	return f, nil
}

// InitSystem returns the name of PID 1, or "" when it cannot be read.
func InitSystem(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "/proc/1/comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SystemdRunning returns nil when systemd is the running init system (it
// has created /run/systemd/system, as sd_booted(3) checks), else an error
// that says what runs instead.
func SystemdRunning(root string) error {
	fi, err := os.Stat(filepath.Join(root, "/run/systemd/system"))
	if err == nil && fi.IsDir() {
		return nil
	}
	pid1 := InitSystem(root)
	if pid1 == "" {
		pid1 = "unknown"
	}
	return fmt.Errorf("systemd is not running (PID 1 is %s)", pid1)
}

// probeSystemd checks that systemd answers over D-Bus.
func probeSystemd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := DialSystemd(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.SystemStateContext(ctx); err != nil {
		return fmt.Errorf("query systemd over D-Bus: %w", err)
	}
	return nil
}

// DialSystemd connects to systemd over the D-Bus system bus or, for root on
// a node without a bus daemon, over systemd's private socket, as systemctl
// does. ctx bounds the connection's whole life, not only the dial. The
// caller closes the connection.
func DialSystemd(ctx context.Context) (*sddbus.Conn, error) {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err == nil {
		return conn, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w", err)
	}
	conn, perr := sddbus.NewSystemdConnectionContext(ctx)
	if perr != nil {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w (private socket: %v)", err, perr)
	}
	return conn, nil
}

// readOSRelease reads os-release(5) from /etc, falling back to /usr/lib. A
// node with neither gets an empty OSRelease rather than an error.
func readOSRelease(root string) (*agentv1.OSRelease, error) {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		f, err := os.Open(filepath.Join(root, p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read os-release: %w", err)
		}
		defer f.Close()
		kv, err := ParseOSRelease(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		return &agentv1.OSRelease{
			Id:              kv["ID"],
			VersionId:       kv["VERSION_ID"],
			IdLike:          strings.Fields(kv["ID_LIKE"]),
			PrettyName:      kv["PRETTY_NAME"],
			VersionCodename: kv["VERSION_CODENAME"],
		}, nil
	}
	return &agentv1.OSRelease{}, nil
}

// ParseOSRelease parses the KEY=VALUE lines of os-release(5). Values may be
// quoted with double or single quotes; inside double quotes, backslash
// escapes ", \, $ and `. Comments and blank lines are skipped, malformed
// lines ignored and blanks around the = tolerated.
func ParseOSRelease(r io.Reader) (map[string]string, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		kv[k] = unquote(strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return kv, nil
}

func unquote(v string) string {
	if len(v) < 2 {
		return v
	}
	switch q := v[0]; {
	case q == '\'' && v[len(v)-1] == '\'':
		return v[1 : len(v)-1]
	case q == '"' && v[len(v)-1] == '"':
		v = v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
				i++
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	return v
}

// memTotal returns MemTotal from /proc/meminfo, in bytes.
func memTotal(root string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(root, "/proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("read meminfo: %w", err)
	}
	n, err := ParseMemTotal(bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("parse meminfo: %w", err)
	}
	return n, nil
}

// ParseMemTotal returns the MemTotal line of /proc/meminfo, in bytes.
func ParseMemTotal(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, errors.New("MemTotal has no value")
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse MemTotal: %w", err)
		}
		switch {
		case len(fields) == 1:
			return n, nil
		case len(fields) == 2 && fields[1] == "kB":
			return n * 1024, nil
		default:
			return 0, fmt.Errorf("MemTotal has unknown unit %q", strings.Join(fields[1:], " "))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no MemTotal line")
}

// addresses lists the addresses of every interface but loopback.
func addresses() ([]*agentv1.Address, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []*agentv1.Address
	for _, iface := range ifaces {
		if iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", iface.Name, err)
		}
		for _, a := range addrs {
			ipnet, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			out = append(out, &agentv1.Address{
				Interface: iface.Name,
				Cidr:      ipnet.String(),
				Mac:       iface.HardwareAddr.String(),
			})
		}
	}
	return out, nil
}

// packageManager returns the package-manager backend the agent's packages
// module would use under root (pkg.Detect), or "" when there is none.
func packageManager(root string) string {
	name, err := pkg.Detect(root)
	if err != nil {
		return ""
	}
	return name
}
