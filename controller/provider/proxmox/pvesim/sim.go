package pvesim

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Config describes the simulated cluster. The zero value is usable: one node
// "pve1" with the storages "local" (dir) and "local-lvm" (lvmthin), no
// templates and no credentials (add a Token or a User to get in).
type Config struct {
	// ClusterName names the cluster in /cluster/status; empty means a
	// standalone node (no "cluster" entry), as on a node never joined.
	ClusterName string
	// PVEVersion is what /version reports, e.g. "8.2.4" (the default). A
	// major version below 8 makes resize synchronous (it answers null).
	PVEVersion string
	// Nodes of the cluster; default one node "pve1".
	Nodes []NodeSpec
	// Storages; default DefaultStorages.
	Storages []StorageSpec
	// Pools that exist (clone's pool parameter must name one).
	Pools []string
	// Templates seeded at start.
	Templates []TemplateSpec
	// Tokens accepted as "PVEAPIToken=ID=SECRET".
	Tokens []Token
	// Users accepted by POST /access/ticket.
	Users []User

	// TaskDurations is how long each task type runs ("qmclone",
	// "qmstart", "qmconfig", "resize", ...); missing types take
	// DefaultTaskDuration.
	TaskDurations       map[string]time.Duration
	DefaultTaskDuration time.Duration
	// AgentDelay is how long after a VM started its guest agent answers
	// ("QEMU guest agent is not running" until then).
	AgentDelay time.Duration
	// AgentIPDelay is how long after the agent answers its NICs carry only
	// an IPv6 link-local address (cloud-init not done yet).
	AgentIPDelay time.Duration
	// LockTimeout is how long a task waits for a VM's config lock
	// (flock on /var/lock/qemu-server/lock-VMID.conf) before it fails with
	// "can't lock file ... - got timeout": qemu-server waits 10s (the
	// default), clone and create a tenth of that.
	LockTimeout time.Duration
	// ResourceLag is how long a new VM appears in /cluster/resources with
	// status "unknown" and no name or stats (before pvestatd's first
	// update), as on a real cluster. Zero disables it.
	ResourceLag time.Duration
	// UnauthorizedDelay delays 401 answers; pveproxy waits 3s. Zero in
	// tests.
	UnauthorizedDelay time.Duration
	// NextIDLower is the lowest VMID nextid hands out (default 100).
	NextIDLower int
	// ImportImageSize is the virtual size of images download-url fetches
	// and of import-from sources the simulator does not know (default 2
	// GiB).
	ImportImageSize int64
	// MACPrefix of generated MACs (default "BC:24:11", Proxmox's OUI).
	MACPrefix string
	// ImportImages are cloud images on import storages (seeded, or
	// fetched by download-url), and whether they carry qemu-guest-agent.
	// Images download-url fetches that are not listed carry it.
	ImportImages []ImportImage
	// ConsoleDelay is how long after a VM runs cloud-init's last stage
	// prints to the serial console (the SSH host keys at an instance's
	// first boot, then the login prompt); default 5s. Bytes printed while
	// no terminal is connected are lost, as on a real serial port.
	ConsoleDelay time.Duration

	// Backend backs started VMs; nil means DefaultBackend.
	Backend Backend
	// Logger receives a line per request and task; nil discards.
	Logger *slog.Logger
	// Faults are the initial fault knobs (see Server.SetFaults).
	Faults Faults
}

// DefaultStorages are the storages of a Config without any: "local" (dir:
// iso,vztmpl,backup,import,snippets) and "local-lvm" (lvmthin:
// images,rootdir) on every node, as a fresh Proxmox VE install has.
func DefaultStorages() []StorageSpec {
	return []StorageSpec{
		{Name: "local", Type: "dir", Content: "iso,vztmpl,backup,import,snippets"},
		{Name: "local-lvm", Type: "lvmthin", Content: "images,rootdir"},
	}
}

// NodeSpec is a cluster node.
type NodeSpec struct {
	Name string
	// IP is the node's cluster address (default 10.0.0.1x).
	IP string
	// CPUs and MemoryBytes size the node (defaults 16 and 64 GiB).
	CPUs        int
	MemoryBytes int64
}

// StorageSpec is a storage as in /etc/pve/storage.cfg.
type StorageSpec struct {
	Name string
	// Type is the plugin type: "dir", "lvmthin", "lvm", "zfspool", "nfs",
	// "rbd".
	Type string
	// Content is the comma-separated content list, e.g. "images,rootdir".
	Content string
	// Shared storages are reachable from every node (clone's target
	// needs one).
	Shared bool
	// Nodes restricts the storage to these nodes; empty means all.
	Nodes []string
	// TotalBytes is the capacity (default 1 TiB).
	TotalBytes int64
}

// TemplateSpec is a VM template the simulator seeds, shaped like the
// templates kthw's images/ recipes build: a cloud image disk on scsi0, a
// cloud-init drive on ide2, agent=1, serial console, virtio NIC on vmbr0.
type TemplateSpec struct {
	VMID int
	Name string
	// Node defaults to the first node; Storage to the first storage on it
	// with "images" content.
	Node    string
	Storage string
	// DiskSize of scsi0 in bytes (default 2 GiB).
	DiskSize int64
	// Tags as Proxmox stores them ("a;b"); sorted on seeding.
	Tags string
	// NoCloudInit leaves out the cloud-init drive; NoAgent leaves out
	// "agent: 1".
	NoCloudInit bool
	NoAgent     bool
	// NoGuestAgentInImage makes the template's disk an operating system
	// without qemu-guest-agent: its clones' agents never answer.
	NoGuestAgentInImage bool
	// Config overrides or adds config keys (Proxmox-formatted values);
	// an empty value deletes the key.
	Config map[string]string
}

// ImportImage is a cloud image on an import storage
// (<Storage>:import/<File>).
type ImportImage struct {
	// Storage defaults to "local"; it must have import content.
	Storage string
	File    string
	// Size is the image's virtual size (default Config.ImportImageSize).
	Size int64
	// GuestAgent says the image carries qemu-guest-agent. VMs whose disk
	// comes from an image without it have no answering agent.
	GuestAgent bool
	// Download: the image is not there at start; download-url of this
	// file name fetches it.
	Download bool
}

// Token is an API token: ID is "USER@REALM!TOKENID".
type Token struct {
	ID     string
	Secret string
}

// User is a user for ticket authentication: Name is "USER@REALM".
type User struct {
	Name     string
	Password string
}

// Option changes the Config Start builds.
type Option func(*Config)

// WithConfig lets a test edit the whole Config.
func WithConfig(f func(*Config)) Option { return f }

// WithNodes replaces the nodes.
func WithNodes(nodes ...NodeSpec) Option { return func(c *Config) { c.Nodes = nodes } }

// WithStorages replaces the storages.
func WithStorages(s ...StorageSpec) Option { return func(c *Config) { c.Storages = s } }

// WithTemplate adds a template.
func WithTemplate(t TemplateSpec) Option {
	return func(c *Config) { c.Templates = append(c.Templates, t) }
}

// WithToken adds an accepted API token.
func WithToken(id, secret string) Option {
	return func(c *Config) { c.Tokens = append(c.Tokens, Token{ID: id, Secret: secret}) }
}

// WithUser adds a user for ticket authentication.
func WithUser(name, password string) Option {
	return func(c *Config) { c.Users = append(c.Users, User{Name: name, Password: password}) }
}

// WithTaskDuration sets how long tasks of one type run.
func WithTaskDuration(taskType string, d time.Duration) Option {
	return func(c *Config) {
		if c.TaskDurations == nil {
			c.TaskDurations = map[string]time.Duration{}
		}
		c.TaskDurations[taskType] = d
	}
}

// WithDefaultTaskDuration sets how long tasks without their own duration run.
func WithDefaultTaskDuration(d time.Duration) Option {
	return func(c *Config) { c.DefaultTaskDuration = d }
}

// WithAgentDelay sets how long after start the guest agent answers.
func WithAgentDelay(d time.Duration) Option { return func(c *Config) { c.AgentDelay = d } }

// WithBackend sets the backend of started VMs.
func WithBackend(b Backend) Option { return func(c *Config) { c.Backend = b } }

// WithPVEVersion sets the version /version reports.
func WithPVEVersion(v string) Option { return func(c *Config) { c.PVEVersion = v } }

// WithFaults sets the initial fault knobs.
func WithFaults(f Faults) Option { return func(c *Config) { c.Faults = f } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Config) { c.Logger = l } }

// Test defaults used by Start.
const (
	TestTokenID     = "root@pam!kthw"
	TestTokenSecret = "6f1f5c52-3a2b-4c8e-9d0f-5e1a2b3c4d5e"
	TestUser        = "root@pam"
	TestPassword    = "pvesim-root"
	TestTemplateID  = 9000
	TestTemplate    = "kthw-debian-12"
)

// Sim is a simulator on an httptest TLS server, made by Start.
type Sim struct {
	*Server
	// URL is the API base, https://127.0.0.1:PORT/api2/json: pass it to
	// proxmox.NewClient.
	URL string
	// Addr is host:port.
	Addr string
	// RootCAs trusts the server's certificate; CAFile holds it as PEM.
	RootCAs *x509.CertPool
	CAFile  string
	// The credentials the simulator accepts.
	TokenID, TokenSecret string
	Username, Password   string

	ts *httptest.Server
}

// HTTPClient returns an HTTP client that trusts the simulator.
func (s *Sim) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12},
	}, Timeout: 30 * time.Second}
}

// Start runs a simulator for the test and stops it at cleanup. Without
// options it has one node "pve1", the storages local and local-lvm, the
// template 9000 "kthw-debian-12", the token TestTokenID/TestTokenSecret,
// the user TestUser/TestPassword, and tasks that take milliseconds.
func Start(t testing.TB, opts ...Option) *Sim {
	t.Helper()
	cfg := Config{
		ClusterName:         "pvesim",
		Tokens:              []Token{{ID: TestTokenID, Secret: TestTokenSecret}},
		Users:               []User{{Name: TestUser, Password: TestPassword}},
		Templates:           []TemplateSpec{{VMID: TestTemplateID, Name: TestTemplate, Tags: "kthw;template"}},
		DefaultTaskDuration: 10 * time.Millisecond,
		AgentDelay:          20 * time.Millisecond,
		ConsoleDelay:        300 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("pvesim: %v", err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.StartTLS()
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	caFile := filepath.Join(t.TempDir(), "pvesim-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatalf("pvesim: write CA: %v", err)
	}
	s := &Sim{
		Server:  srv,
		URL:     ts.URL + "/api2/json",
		Addr:    ts.Listener.Addr().String(),
		RootCAs: pool,
		CAFile:  caFile,
		ts:      ts,
	}
	if len(cfg.Tokens) > 0 {
		s.TokenID, s.TokenSecret = cfg.Tokens[0].ID, cfg.Tokens[0].Secret
	}
	if len(cfg.Users) > 0 {
		s.Username, s.Password = cfg.Users[0].Name, cfg.Users[0].Password
	}
	return s
}
