// Package sshdtest starts a real OpenSSH sshd on 127.0.0.1 for tests of the controller's SSH
// code.
//
// Start needs root (test users, /run/sshd) and /usr/sbin/sshd; without them it skips the
// test. Each server has throwaway host keys and its own config, log and authorized_keys in
// temporary directories; one client key (Server.ClientKeyFile) is authorized for root and for
// the test users UserSudo, UserPassword and UserNoisy. Root's own files are never touched:
// keys are authorized through "AuthorizedKeysFile <dir>/%u".
//
// The test users are real accounts (useradd) and a sudoers file, shared by all test binaries
// on the machine and removed when the last one is done (see users.go). A test binary that
// starts several servers should call Main from TestMain so the users are created once:
//
//	func TestMain(m *testing.M) { sshdtest.Main(m) }
//
// Close SSH clients before the server stops: register their Close with t.Cleanup after
// Start (cleanups run last-in first-out) or defer it in the test.
package sshdtest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHDPath is the sshd binary the servers run.
const SSHDPath = "/usr/sbin/sshd"

// Key types for WithHostKeyTypes.
const (
	KeyEd25519 = "ed25519"
	KeyECDSA   = "ecdsa"
	KeyRSA     = "rsa"
)

// Option configures Start.
type Option func(*config)

type config struct {
	hostKeyTypes []string
	extra        []string
}

// WithHostKeyTypes gives the server host keys of these types, in this order (default: only
// ed25519). Server.HostKey is the first.
func WithHostKeyTypes(types ...string) Option {
	return func(c *config) { c.hostKeyTypes = types }
}

// WithConfig appends lines to sshd_config.
func WithConfig(lines ...string) Option {
	return func(c *config) { c.extra = append(c.extra, lines...) }
}

// Server is a running sshd.
type Server struct {
	Addr string // "127.0.0.1:PORT"
	Host string // "127.0.0.1"
	Port int

	HostKey  ssh.PublicKey   // the first host key
	HostKeys []ssh.PublicKey // all host keys, in WithHostKeyTypes order

	// ClientKeyFile is an unencrypted OpenSSH private key authorized for root and the test
	// users; ClientSigner is the same key.
	ClientKeyFile string
	ClientSigner  ssh.Signer

	Dir     string // config, host keys and log
	LogFile string // sshd's log (-e); printed when the test fails

	cfg     config
	cfgFile string
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// Start starts an sshd on 127.0.0.1 on a free port and stops it when the test ends. It skips
// the test unless running as root with sshd, sudo and useradd installed.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	skipUnlessUsable(t)
	s := &Server{cfg: config{hostKeyTypes: []string{KeyEd25519}}}
	for _, o := range opts {
		o(&s.cfg)
	}
	if err := acquireUsers(); err != nil {
		t.Fatalf("sshdtest: create test users: %v", err)
	}
	t.Cleanup(releaseUsers) // runs after the server's own cleanup below

	s.Dir = t.TempDir()
	s.LogFile = filepath.Join(s.Dir, "sshd.log")
	s.cfgFile = filepath.Join(s.Dir, "sshd_config")
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}

	// authorized_keys must be readable by the users themselves (sshd reads them with the
	// user's uid), so they live in a world-readable directory of their own.
	akDir, err := os.MkdirTemp("", "kthw-sshdtest-ak-")
	if err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(akDir) })
	if err := os.Chmod(akDir, 0o755); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	signer, pemBytes, err := generateKey(KeyEd25519)
	if err != nil {
		t.Fatalf("sshdtest: client key: %v", err)
	}
	s.ClientSigner = signer
	s.ClientKeyFile = filepath.Join(s.Dir, "id_ed25519")
	if err := os.WriteFile(s.ClientKeyFile, pemBytes, 0o600); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	authorized := ssh.MarshalAuthorizedKey(signer.PublicKey())
	for _, u := range append([]string{"root"}, Users...) {
		if err := os.WriteFile(filepath.Join(akDir, u), authorized, 0o644); err != nil {
			t.Fatalf("sshdtest: %v", err)
		}
	}
	if err := s.writeHostKeys(); err != nil {
		t.Fatalf("sshdtest: host keys: %v", err)
	}

	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log (%s):\n%s", s.LogFile, s.Log())
		}
	})

	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("sshdtest: %v", err)
		}
		s.Port = port
		s.Host = "127.0.0.1"
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(port))
		if err := s.writeConfig(akDir); err != nil {
			t.Fatalf("sshdtest: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("sshdtest: start sshd: %v\nlog:\n%s", lastErr, s.Log())
	return nil
}

func skipUnlessUsable(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sshdtest: needs root (creates test users and runs sshd)")
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		t.Skipf("sshdtest: %s not installed (apt-get install openssh-server)", SSHDPath)
	}
	for _, tool := range []string{"sudo", "useradd", "usermod", "userdel", "chpasswd", "visudo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("sshdtest: %s not installed", tool)
		}
	}
}

// Main runs the tests with the test users pinned, so that they are created at most once per
// test binary and removed at the end. Call it from TestMain. It returns rather than exiting,
// so the caller's deferred cleanups run; the test binary then exits with m.Run's code.
func Main(m *testing.M) {
	users.mu.Lock()
	users.pinned = true
	users.mu.Unlock()
	m.Run()
	users.mu.Lock()
	users.pinned = false
	if users.refs == 0 {
		leave()
	}
	users.mu.Unlock()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) writeHostKeys() error {
	s.HostKeys = nil
	for i, typ := range s.cfg.hostKeyTypes {
		signer, pemBytes, err := generateKey(typ)
		if err != nil {
			return err
		}
		path := s.hostKeyPath(i)
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return err
		}
		s.HostKeys = append(s.HostKeys, signer.PublicKey())
	}
	s.HostKey = s.HostKeys[0]
	return nil
}

func (s *Server) hostKeyPath(i int) string {
	return filepath.Join(s.Dir, fmt.Sprintf("ssh_host_%d_%s_key", i, s.cfg.hostKeyTypes[i]))
}

func (s *Server) writeConfig(akDir string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ListenAddress 127.0.0.1\nPort %d\n", s.Port)
	for i := range s.cfg.hostKeyTypes {
		fmt.Fprintf(&b, "HostKey %s\n", s.hostKeyPath(i))
	}
	fmt.Fprintf(&b, "PidFile %s\n", filepath.Join(s.Dir, "sshd.pid"))
	fmt.Fprintf(&b, "AuthorizedKeysFile %s/%%u\n", akDir)
	b.WriteString("StrictModes no\n" +
		"UsePAM no\n" +
		"PermitRootLogin prohibit-password\n" +
		"PasswordAuthentication no\n" +
		"KbdInteractiveAuthentication no\n" +
		"AllowTcpForwarding yes\n" +
		"PrintMotd no\n" +
		"Subsystem sftp internal-sftp\n" +
		"LogLevel VERBOSE\n")
	for _, l := range s.cfg.extra {
		b.WriteString(l + "\n")
	}
	return os.WriteFile(s.cfgFile, []byte(b.String()), 0o600)
}

// start runs sshd and waits until it accepts connections.
func (s *Server) start() error {
	log, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "--- sshdtest: starting sshd on %s\n", s.Addr)
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.cfgFile)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.stopped = cmd, exited, false
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited: %v", cmd.ProcessState)
		default:
		}
		// Ready means sshd answers with its banner, not just that the
		// port accepts: under load a fresh sshd may accept before it
		// serves.
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			banner := make([]byte, 4)
			_, rerr := io.ReadFull(c, banner)
			c.Close()
			if rerr == nil && string(banner) == "SSH-" {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	return errors.New("sshd did not accept connections within 10s")
}

// Stop stops sshd: SIGTERM to the listener, SIGKILL after 5s. Connections already open live
// on in their per-connection processes until their clients close them. Stop is idempotent;
// Start's cleanup calls it.
func (s *Server) Stop() {
	if s.cmd == nil || s.stopped {
		return
	}
	s.stopped = true
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// RotateHostKeys gives the server new host keys of the same types and restarts it on the
// same port, as a reinstalled or impersonated host would look. Open connections survive.
func (s *Server) RotateHostKeys(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.writeHostKeys(); err != nil {
		t.Fatalf("sshdtest: host keys: %v", err)
	}
	var err error
	for i := 0; i < 50; i++ { // the old listener's port may take a moment to free
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sshdtest: restart sshd: %v\nlog:\n%s", err, s.Log())
}

// Log returns sshd's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// KnownHostsLine returns a known_hosts line for the server with the given keys (default:
// all its host keys), one line per key.
func (s *Server) KnownHostsLine(keys ...ssh.PublicKey) string {
	if len(keys) == 0 {
		keys = s.HostKeys
	}
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, k))
		b.WriteString("\n")
	}
	return b.String()
}

// WriteKnownHosts writes a new known_hosts file (0600) in a temporary directory with lines
// for the given keys (default: all host keys) and returns its path.
func (s *Server) WriteKnownHosts(t testing.TB, keys ...ssh.PublicKey) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(s.KnownHostsLine(keys...)), 0o600); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	return path
}

// ClientConfig returns a client config for user with the client key and a host key callback
// pinned to the server's keys: for tests that need a connection but do not test dialing.
func (s *Server) ClientConfig(user string) *ssh.ClientConfig {
	keys := s.HostKeys
	return &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(s.ClientSigner)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			for _, k := range keys {
				if string(k.Marshal()) == string(key.Marshal()) {
					return nil
				}
			}
			return errors.New("sshdtest: unexpected host key")
		},
		Timeout: 10 * time.Second,
	}
}

// Dial connects to the server as user with the client key and closes the connection when
// the test ends (before the server stops).
func (s *Server) Dial(t testing.TB, user string) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", s.Addr, s.ClientConfig(user))
	if err != nil {
		t.Fatalf("sshdtest: dial %s@%s: %v", user, s.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// generateKey returns a new private key of type typ as a signer and as an OpenSSH PEM.
func generateKey(typ string) (ssh.Signer, []byte, error) {
	var priv any
	var err error
	switch typ {
	case KeyEd25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case KeyECDSA:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, nil, fmt.Errorf("unknown key type %q", typ)
	}
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "sshdtest")
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return signer, pem.EncodeToMemory(block), nil
}
