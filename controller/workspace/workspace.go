// Package workspace is the controller's per-cluster directory: the locked
// state database, the SSH key the controller uses for the nodes it creates,
// and the known_hosts file that pins their host keys.
//
//	<dir>/state.db       bbolt state (0600, exclusive lock)
//	<dir>/id_ed25519     controller key for provider-made nodes (0600)
//	<dir>/id_ed25519.pub
//	<dir>/known_hosts    pinned host keys (0600)
//	<dir>/etcd-snapshots/<node>/  etcd snapshots pulled back from nodes (0700; files 0600)
package workspace

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/renameio/v2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kthw/kthw/controller/state"
)

// File names inside a workspace.
const (
	KeyFile        = "id_ed25519"
	KnownHostsFile = "known_hosts"
	// AgentHashStampFile remembers the local agent's sha256 with its identity (push.Locate).
	AgentHashStampFile = "agent.sha256"
	// EtcdSnapshotsDir holds the etcd snapshots pulled back from nodes.
	EtcdSnapshotsDir = "etcd-snapshots"
)

// Workspace is an open, locked workspace.
type Workspace struct {
	Dir   string
	State *state.Store
	// PublicKey is the controller's key in authorized_keys format.
	PublicKey []byte

	// hostsMu serializes read-modify-write of known_hosts: nodes are
	// pinned from parallel goroutines. (Other processes are kept out by
	// the state lock.)
	hostsMu sync.Mutex
}

// Open locks the workspace at dir (creating it) and makes sure its SSH key
// exists. A workspace in use by another controller fails at once.
func Open(dir string) (*Workspace, error) {
	st, err := state.Open(dir, state.Options{})
	if err != nil {
		return nil, err
	}
	w := &Workspace{Dir: dir, State: st}
	if w.PublicKey, err = ensureKey(filepath.Join(dir, KeyFile)); err != nil {
		st.Close()
		return nil, err
	}
	return w, nil
}

// Close releases the workspace.
func (w *Workspace) Close() error { return w.State.Close() }

// KeyPath is the controller's private key file.
func (w *Workspace) KeyPath() string { return filepath.Join(w.Dir, KeyFile) }

// EtcdSnapshotsPath is the directory of etcd snapshots pulled back from
// the nodes (see controller/etcd.Store).
func (w *Workspace) EtcdSnapshotsPath() string { return filepath.Join(w.Dir, EtcdSnapshotsDir) }

// AgentHashStampPath is the file that remembers the local agent binary's sha256 between runs.
func (w *Workspace) AgentHashStampPath() string { return filepath.Join(w.Dir, AgentHashStampFile) }

// KnownHostsPath is the workspace's known_hosts file.
func (w *Workspace) KnownHostsPath() string { return filepath.Join(w.Dir, KnownHostsFile) }

// PinHostKey records key (authorized_keys format) as the only key of addr
// ("host" or "host:port") in known_hosts. Providers that learn a node's key
// out of band (they generated it, or read it through a guest agent) call it
// before the first connection.
func (w *Workspace) PinHostKey(addr string, key string) error {
	return w.PinHostKeys(addr, key)
}

// PinHostKeys records keys (authorized_keys format, one of each type a
// host has) as the only keys of addr in known_hosts.
func (w *Workspace) PinHostKeys(addr string, keys ...string) error {
	if len(keys) == 0 {
		return fmt.Errorf("pin host key for %s: no key", addr)
	}
	var pubs []ssh.PublicKey
	for _, key := range keys {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key))
		if err != nil {
			return fmt.Errorf("pin host key for %s: %w", addr, err)
		}
		pubs = append(pubs, pub)
	}
	host := knownhosts.Normalize(addr)
	path := w.KnownHostsPath()
	w.hostsMu.Lock()
	defer w.hostsMu.Unlock()
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pin host key for %s: %w", addr, err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		line := sc.Text()
		if lineHasHost(line, host) {
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	for _, pub := range pubs {
		out.WriteString(knownhosts.Line([]string{host}, pub))
		out.WriteByte('\n')
	}
	return writeFileAtomic(path, out.Bytes(), 0o600)
}

// UnpinHost removes every known_hosts line of addr.
func (w *Workspace) UnpinHost(addr string) error {
	host := knownhosts.Normalize(addr)
	path := w.KnownHostsPath()
	w.hostsMu.Lock()
	defer w.hostsMu.Unlock()
	old, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unpin host %s: %w", addr, err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		if !lineHasHost(sc.Text(), host) {
			out.WriteString(sc.Text())
			out.WriteByte('\n')
		}
	}
	return writeFileAtomic(path, out.Bytes(), 0o600)
}

func lineHasHost(line, host string) bool {
	f := strings.Fields(line)
	if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], "@") {
		return false
	}
	for _, h := range strings.Split(f[0], ",") {
		if h == host {
			return true
		}
	}
	return false
}

// ensureKey creates an ed25519 key pair at path unless one exists, and
// returns the public key in authorized_keys format.
func ensureKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil {
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("read workspace key %s: %w", path, err)
		}
		return ssh.MarshalAuthorizedKey(signer.PublicKey()), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read workspace key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate workspace key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "kthw workspace")
	if err != nil {
		return nil, fmt.Errorf("encode workspace key: %w", err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode workspace key: %w", err)
	}
	authorized := ssh.MarshalAuthorizedKey(spub)
	if err := writeFileAtomic(path+".pub", authorized, 0o644); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return authorized, nil
}

// writeFileAtomic replaces path with data at mode: a temporary file beside it, synced and
// renamed into place.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithStaticPermissions(mode))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
