package pvesim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Extension adds flags to kthw-pvesim and may change the simulator's
// Config before it serves, e.g. to back its VMs with another Backend
// (kthw-pvesim --lab, package pvelab).
type Extension interface {
	// AddFlags registers the extension's flags on the command.
	AddFlags(*cobra.Command)
	// Configure runs once the flags are parsed, before the API listens;
	// cfg.Logger is set. The returned function, when not nil, runs after
	// the server stopped (with a context of its own).
	Configure(ctx context.Context, cfg *Config, stdout io.Writer) (func(context.Context) error, error)
}

// cliOptions are kthw-pvesim's flags.
type cliOptions struct {
	listen       string
	noTLS        bool
	certDir      string
	tokens       []string
	users        []string
	nodes        []string
	sharedStore  []string
	cluster      string
	templates    []string
	taskDuration time.Duration
	durationFor  []string
	agentDelay   time.Duration
	agentIPDelay time.Duration
	consoleDelay time.Duration
	importImages []string
	resourceLag  time.Duration
	unauthDelay  time.Duration
	pveVersion   string
	logLevel     string

	cloneLockTimeouts    int
	storageLockTimeouts  int
	stealNextIDs         int
	agentMissing         bool
	agentFileReadBlocked bool
	forbid               []string
	offlineNodes         []string
	taskWarnings         []string
	taskFailures         []string
}

// Command is the kthw-pvesim command line with injected output streams and
// optional extensions.
func Command(version string, stdout, stderr io.Writer, ext ...Extension) *cobra.Command {
	o := &cliOptions{}
	cmd := &cobra.Command{
		Use:   "kthw-pvesim",
		Short: "Serve a simulated Proxmox VE API",
		Long: "kthw-pvesim serves a stateful simulation of the Proxmox VE API (/api2/json) that kthw's\n" +
			"proxmox provider uses: nodes, storages, VM templates, clones, tasks, guest agent.\n" +
			"Fault injection: PUT /pvesim/faults with a JSON body, or the --fault-* flags.",
		Version:       version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCLI(cmd.Context(), o, ext, stdout, stderr)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8006", "address to listen on")
	f.BoolVar(&o.noTLS, "no-tls", false, "serve plain HTTP instead of HTTPS")
	f.StringVar(&o.certDir, "cert-dir", "", "directory for the generated self-signed certificate (default: the user cache dir /kthw-pvesim)")
	f.StringArrayVar(&o.tokens, "token", nil, "API token to accept, USER@REALM!ID=SECRET (repeatable; default root@pam!kthw with a random secret)")
	f.StringArrayVar(&o.users, "user", nil, "user for ticket login, USER@REALM:PASSWORD (repeatable)")
	f.StringArrayVar(&o.nodes, "node", nil, "cluster node NAME[=IP] (repeatable; default pve1)")
	f.StringArrayVar(&o.sharedStore, "shared-storage", nil, "add a shared storage NAME[=TYPE] with images content on every node (repeatable)")
	f.StringVar(&o.cluster, "cluster-name", "pvesim", "cluster name; empty for a standalone node")
	f.StringArrayVar(&o.templates, "template", nil, "template to seed, VMID:NAME[,node=N][,storage=S][,tags=a;b][,disk=SIZE][,no-cloudinit][,no-agent] (repeatable)")
	f.DurationVar(&o.taskDuration, "task-duration", 0, "run every task this long (default: per-type durations of a small host)")
	f.StringArrayVar(&o.durationFor, "task-duration-for", nil, "TYPE=DURATION for one task type, e.g. qmclone=10s (repeatable)")
	f.DurationVar(&o.agentDelay, "agent-delay", 5*time.Second, "time from VM start until the guest agent answers")
	f.DurationVar(&o.agentIPDelay, "agent-ip-delay", 0, "time the agent reports only link-local addresses")
	f.DurationVar(&o.consoleDelay, "console-delay", 5*time.Second, "time from VM start until cloud-init prints its host keys on the serial console")
	f.StringArrayVar(&o.importImages, "import-image", nil, "cloud image on the import storage local, FILE[:agent] (:agent: it carries qemu-guest-agent); repeatable")
	f.DurationVar(&o.resourceLag, "resource-lag", 0, "time a new VM shows in /cluster/resources without name and stats")
	f.DurationVar(&o.unauthDelay, "unauthorized-delay", 3*time.Second, "delay of 401 answers (pveproxy waits 3s)")
	f.StringVar(&o.pveVersion, "pve-version", "8.2.4", "Proxmox VE version to report")
	f.StringVar(&o.logLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")
	f.IntVar(&o.cloneLockTimeouts, "fault-clone-lock-timeouts", 0, "fail the next N clones with \"can't lock file ... got timeout\"")
	f.IntVar(&o.storageLockTimeouts, "fault-storage-lock-timeouts", 0, "fail the next N clones half-way with a storage cfs-lock timeout")
	f.IntVar(&o.stealNextIDs, "fault-steal-nextids", 0, "let another client take the next N VMIDs nextid hands out")
	f.BoolVar(&o.agentMissing, "fault-agent-missing", false, "no guest agent answers")
	f.StringArrayVar(&o.forbid, "fault-forbid", nil, "answer 403 for [METHOD:]PATH-PREFIX below /api2/json (repeatable)")
	f.StringArrayVar(&o.offlineNodes, "fault-offline-node", nil, "node NAME[=595|596] is unreachable (repeatable)")
	f.StringArrayVar(&o.taskWarnings, "fault-task-warnings", nil, "TYPE=N: the next N tasks of TYPE end with WARNINGS: 1 (repeatable)")
	f.StringArrayVar(&o.taskFailures, "fault-task-failures", nil, "TYPE=N: the next N tasks of TYPE fail (repeatable)")
	f.BoolVar(&o.agentFileReadBlocked, "fault-agent-file-read-blocked", false, "the guest agent refuses guest-file-* (agent/file-read fails)")
	for _, e := range ext {
		e.AddFlags(cmd)
	}
	return cmd
}

func runCLI(ctx context.Context, o *cliOptions, ext []Extension, stdout, stderr io.Writer) (err error) {
	cfg, printToken, err := o.config(stderr)
	if err != nil {
		return err
	}
	for _, e := range ext {
		done, cerr := e.Configure(ctx, &cfg, stdout)
		if done != nil {
			defer func() {
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				err = errors.Join(err, done(dctx)) // the named result
			}()
		}
		if cerr != nil {
			return cerr
		}
	}
	srv, err := New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	scheme := "http"
	if !o.noTLS {
		host, _, _ := net.SplitHostPort(o.listen)
		dir := o.certDir
		if dir == "" {
			base, err := os.UserCacheDir()
			if err != nil {
				base = os.TempDir()
			}
			dir = filepath.Join(base, "kthw-pvesim")
		}
		cert, path, err := EnsureCert(dir, []string{host})
		if err != nil {
			return err
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
		scheme = "https"
		fmt.Fprintf(stdout, "CA certificate: %s\n", path)
	}
	fmt.Fprintf(stdout, "API: %s://%s%s\n", scheme, ln.Addr(), BasePath)
	if printToken != "" {
		fmt.Fprintf(stdout, "API token: %s\n", printToken)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// config turns the flags into a Config; printToken is the generated token
// to show, if any.
func (o *cliOptions) config(stderr io.Writer) (Config, string, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return Config{}, "", fmt.Errorf("--log-level: %w", err)
	}
	cfg := Config{
		ClusterName: o.cluster, PVEVersion: o.pveVersion,
		AgentDelay: o.agentDelay, AgentIPDelay: o.agentIPDelay, ResourceLag: o.resourceLag, ConsoleDelay: o.consoleDelay,
		UnauthorizedDelay: o.unauthDelay,
		Logger:            slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})),
		TaskDurations:     DefaultTaskDurations(),
	}
	for _, im := range o.importImages {
		file, agent, _ := strings.Cut(im, ":")
		if agent != "" && agent != "agent" {
			return Config{}, "", fmt.Errorf("--import-image %q: want FILE or FILE:agent", im)
		}
		cfg.ImportImages = append(cfg.ImportImages, ImportImage{File: file, GuestAgent: agent == "agent"})
	}
	if o.taskDuration > 0 {
		cfg.TaskDurations, cfg.DefaultTaskDuration = nil, o.taskDuration
	}
	for _, kv := range o.durationFor {
		typ, ds, ok := strings.Cut(kv, "=")
		d, err := time.ParseDuration(ds)
		if !ok || err != nil {
			return Config{}, "", fmt.Errorf("--task-duration-for %q: want TYPE=DURATION", kv)
		}
		if cfg.TaskDurations == nil {
			cfg.TaskDurations = map[string]time.Duration{}
		}
		cfg.TaskDurations[typ] = d
	}
	printToken := ""
	for _, t := range o.tokens {
		id, secret, ok := strings.Cut(t, "=")
		if !ok || !strings.Contains(id, "!") || secret == "" {
			return Config{}, "", fmt.Errorf("--token %q: want USER@REALM!ID=SECRET", t)
		}
		cfg.Tokens = append(cfg.Tokens, Token{ID: id, Secret: secret})
	}
	if len(cfg.Tokens) == 0 {
		secret := randomUUID()
		cfg.Tokens = []Token{{ID: "root@pam!kthw", Secret: secret}}
		printToken = "root@pam!kthw=" + secret
	}
	for _, u := range o.users {
		name, pw, ok := strings.Cut(u, ":")
		if !ok || !strings.Contains(name, "@") {
			return Config{}, "", fmt.Errorf("--user %q: want USER@REALM:PASSWORD", u)
		}
		cfg.Users = append(cfg.Users, User{Name: name, Password: pw})
	}
	for _, n := range o.nodes {
		name, ip, _ := strings.Cut(n, "=")
		cfg.Nodes = append(cfg.Nodes, NodeSpec{Name: name, IP: ip})
	}
	if len(o.sharedStore) > 0 {
		cfg.Storages = DefaultStorages()
		for _, s := range o.sharedStore {
			name, typ, _ := strings.Cut(s, "=")
			if typ == "" {
				typ = "rbd"
			}
			cfg.Storages = append(cfg.Storages, StorageSpec{Name: name, Type: typ, Content: "images,rootdir", Shared: true})
		}
	}
	for _, t := range o.templates {
		ts, err := parseTemplateFlag(t)
		if err != nil {
			return Config{}, "", err
		}
		cfg.Templates = append(cfg.Templates, ts)
	}
	f := &cfg.Faults
	f.CloneLockTimeouts, f.StorageLockTimeouts, f.StealNextIDs = o.cloneLockTimeouts, o.storageLockTimeouts, o.stealNextIDs
	f.AgentMissing, f.AgentFileReadBlocked = o.agentMissing, o.agentFileReadBlocked
	for _, p := range o.forbid {
		method, path, ok := strings.Cut(p, ":")
		if !ok || strings.HasPrefix(p, "/") {
			method, path = "", p
		}
		f.Forbidden = append(f.Forbidden, ForbidRule{Method: strings.ToUpper(method), Path: path})
	}
	for _, n := range o.offlineNodes {
		name, code, _ := strings.Cut(n, "=")
		c, err := strconv.Atoi(code)
		if code == "" {
			c, err = 596, nil
		}
		if err != nil || (c != 595 && c != 596) {
			return Config{}, "", fmt.Errorf("--fault-offline-node %q: want NAME, NAME=595 or NAME=596", n)
		}
		if f.OfflineNodes == nil {
			f.OfflineNodes = map[string]int{}
		}
		f.OfflineNodes[name] = c
	}
	var err error
	if f.TaskWarnings, err = parseCounts("--fault-task-warnings", o.taskWarnings); err != nil {
		return Config{}, "", err
	}
	if f.TaskFailures, err = parseCounts("--fault-task-failures", o.taskFailures); err != nil {
		return Config{}, "", err
	}
	return cfg, printToken, nil
}

func parseCounts(flag string, list []string) (map[string]int, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]int{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s %q: want TYPE=N", flag, kv)
		}
		m[k] = n
	}
	return m, nil
}

// parseTemplateFlag parses VMID:NAME[,key=value...].
func parseTemplateFlag(s string) (TemplateSpec, error) {
	head, rest, _ := strings.Cut(s, ",")
	idStr, name, ok := strings.Cut(head, ":")
	id, err := strconv.Atoi(idStr)
	if !ok || err != nil || name == "" {
		return TemplateSpec{}, fmt.Errorf("--template %q: want VMID:NAME[,node=N][,storage=S][,tags=a;b][,disk=SIZE][,no-cloudinit][,no-agent]", s)
	}
	t := TemplateSpec{VMID: id, Name: name}
	for _, kv := range splitCommas(rest) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "node":
			t.Node = v
		case "storage":
			t.Storage = v
		case "tags":
			t.Tags = v
		case "disk":
			n, ok := parseSize(v)
			if !ok {
				return TemplateSpec{}, fmt.Errorf("--template %q: bad disk size %q", s, v)
			}
			t.DiskSize = n
		case "no-cloudinit":
			t.NoCloudInit = true
		case "no-agent":
			t.NoAgent = true
		default:
			return TemplateSpec{}, fmt.Errorf("--template %q: unknown option %q", s, k)
		}
	}
	return t, nil
}

func splitCommas(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
