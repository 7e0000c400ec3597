// Package server implements the agent's gRPC service, kthw.agent.v1.AgentService:
// handshake, facts, unit status, modules and the blob store. It knows nothing
// of the transport; the serve command registers it on a gRPC server that runs
// over yamux on the agent's stdio.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/kthw/kthw/agent/facts"
	"github.com/kthw/kthw/agent/module"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// DefaultBlobDir is where blobs are stored unless Options.BlobDir says
// otherwise.
const DefaultBlobDir = "/var/lib/kthw/blobs"

// defaultUnits are the units Status reports when the request names none.
var defaultUnits = []string{"containerd.service", "kubelet.service", "etcd.service"}

// unitsTimeout bounds the D-Bus calls of Status.
const unitsTimeout = 5 * time.Second

// Options configure a Server.
type Options struct {
	// Version is the agent's version, reported by Handshake and Status.
	Version string
	// Logger is the agent's log; nil discards.
	Logger *slog.Logger
	// BlobDir is the blob store; "" means DefaultBlobDir under Root.
	BlobDir string
	// Root prefixes every path the agent reads or writes on the node (for
	// tests); "" means /.
	Root string
	// ExePath is the binary whose sha256 Handshake reports; "" means
	// /proc/self/exe.
	ExePath string
	// Modules are the modules RunModule can run; nil means module.Builtins().
	Modules *module.Registry
}

// Server implements agentv1.AgentServiceServer.
type Server struct {
	agentv1.UnimplementedAgentServiceServer

	version string
	log     *slog.Logger
	root    string
	blobs   *blobStore
	modules *module.Registry
	started time.Time
	exeHash func() (string, error)
}

var _ agentv1.AgentServiceServer = (*Server)(nil)

// New returns a Server. It does no I/O: the blob directory is created on the
// first upload and the binary hashed on the first handshake.
func New(opts Options) *Server {
	s := &Server{
		version: opts.Version,
		log:     opts.Logger,
		root:    opts.Root,
		modules: opts.Modules,
		started: time.Now(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.modules == nil {
		s.modules = module.Builtins()
	}
	dir := opts.BlobDir
	if dir == "" {
		dir = filepath.Join(opts.Root, DefaultBlobDir)
	}
	s.blobs = &blobStore{dir: dir, log: s.log}
	exe := opts.ExePath
	if exe == "" {
		exe = "/proc/self/exe"
	}
	s.exeHash = sync.OnceValues(func() (string, error) { return binaryHash(exe) })
	return s
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) {
	agentv1.RegisterAgentServiceServer(g, s)
}

// Handshake reports the agent's version, API version, binary hash and pid.
func (s *Server) Handshake(ctx context.Context, req *agentv1.HandshakeRequest) (*agentv1.HandshakeResponse, error) {
	s.log.InfoContext(ctx, "handshake",
		"controller_version", req.GetControllerVersion(), "controller_api", req.GetApiVersion())
	sum, err := s.exeHash()
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.HandshakeResponse{
		AgentVersion: s.version,
		ApiVersion:   agentv1.APIVersion,
		BinarySha256: sum,
		Pid:          int64(os.Getpid()),
	}, nil
}

// Facts describes the node.
func (s *Server) Facts(ctx context.Context, _ *agentv1.FactsRequest) (*agentv1.FactsResponse, error) {
	f, err := facts.Gather(ctx, s.root)
	if err != nil {
		return nil, toStatus(fmt.Errorf("gather facts: %w", err))
	}
	return f, nil
}

// Status reports the agent's uptime and the state of units (by default
// containerd, kubelet and etcd). When systemd
// cannot be asked, units_available is false and units_detail says why; that
// is not an error.
func (s *Server) Status(ctx context.Context, req *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	resp := &agentv1.StatusResponse{
		UptimeSeconds: time.Since(s.started).Seconds(),
		AgentVersion:  s.version,
	}
	names := req.GetUnits()
	if len(names) == 0 {
		names = defaultUnits
	}
	units, err := s.units(ctx, names)
	if err != nil {
		if ctx.Err() != nil {
			return nil, toStatus(ctx.Err())
		}
		resp.UnitsDetail = err.Error()
		return resp, nil
	}
	resp.UnitsAvailable, resp.Units = true, units
	return resp, nil
}

// units asks systemd over D-Bus for the state of the named units. A unit
// systemd does not know comes back with load state "not-found".
func (s *Server) units(ctx context.Context, names []string) ([]*agentv1.UnitStatus, error) {
	if err := facts.SystemdRunning(s.root); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, unitsTimeout)
	defer cancel()
	conn, err := facts.DialSystemd(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	list, err := conn.ListUnitsByNamesContext(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("list units over D-Bus: %w", err)
	}
	out := make([]*agentv1.UnitStatus, 0, len(list))
	for _, u := range list {
		out = append(out, &agentv1.UnitStatus{
			Name:        u.Name,
			LoadState:   u.LoadState,
			ActiveState: u.ActiveState,
			SubState:    u.SubState,
			Description: u.Description,
		})
	}
	return out, nil
}
