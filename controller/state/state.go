// Package state keeps what kthw-controller knows about a cluster between
// runs, per workspace, in a bbolt database: the nodes that exist or are being
// made (recorded with intent before a provider creates them, so a killed run
// never leaks or duplicates a VM), their host keys and agent hashes, cluster
// metadata, and an append-only journal of steps for resuming.
//
// A workspace is a directory (see ResolveWorkspace) holding state.db. Only
// one kthw-controller may use a workspace at a time: Open takes an exclusive
// lock on the database and fails at once, naming the holder's pid, if
// another process has it.
//
// Every write is one bbolt transaction, committed with fsync before the call
// returns: a record that a call stored survives the process being killed
// right after.
//
// State never holds secrets. Host keys are public keys; API tokens, private
// keys and decrypted SOPS values stay in memory. Journal messages must not
// carry secrets either.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// File names inside a workspace.
const (
	// DBFile is the bbolt database.
	DBFile = "state.db"
	// OwnerFile names the process holding the workspace, for the message
	// of a second Open; the lock itself is bbolt's flock on DBFile.
	OwnerFile = "state.db.owner"
)

// DefaultLockTimeout is how long Open waits for the workspace lock when
// Options.LockTimeout is zero. It is short on purpose: a second controller
// is told at once rather than queued behind a long run.
const DefaultLockTimeout = 100 * time.Millisecond

// schemaVersion is the layout of the database this package writes.
const schemaVersion = 1

// Bucket names and fixed keys.
var (
	bucketNodes   = []byte("nodes")
	bucketMeta    = []byte("meta")
	bucketJournal = []byte("journal")

	keySchema  = []byte("schema")
	keyCluster = []byte("cluster")
)

// Errors.
var (
	// ErrInUse matches (errors.Is) an *InUseError.
	ErrInUse = errors.New("workspace is in use")
	// ErrNotFound is returned for a record that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is wrapped by errors for records that cannot be stored.
	ErrInvalid = errors.New("invalid record")
)

// InUseError is returned by Open when another process holds the workspace.
type InUseError struct {
	Dir  string
	PID  int    // 0 if the holder did not say
	Host string // the holder's host name, if it said
}

func (e *InUseError) Error() string {
	holder := "pid unknown"
	if e.PID > 0 {
		holder = "pid " + strconv.Itoa(e.PID)
	}
	if h, _ := os.Hostname(); e.Host != "" && e.Host != h {
		holder += " on " + e.Host
	}
	return fmt.Sprintf("workspace %s is in use by another kthw-controller (%s)", e.Dir, holder)
}

// Is reports whether target is ErrInUse.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// Options tune Open. The zero value is ready to use.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the workspace; 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// Now returns the time for record timestamps; nil means time.Now.
	Now func() time.Time
}

// Store is an open workspace state. Its methods are safe for concurrent use.
// Methods take a context for parity with a shared (etcd) backend; a bbolt
// transaction itself is not interruptible, so ctx is checked before it
// starts.
type Store struct {
	dir string
	db  *bolt.DB
	now func() time.Time
}

// owner is the content of OwnerFile.
type owner struct {
	PID   int       `json:"pid"`
	Host  string    `json:"host,omitempty"`
	Since time.Time `json:"since"`
}

// Open opens the state of the workspace dir, creating dir (mode 0700) and its
// database (mode 0600) if needed, and locks it for this process until Close.
// If another process holds the workspace, Open returns an *InUseError after
// at most opts.LockTimeout.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open state: no workspace directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create workspace: %w", err)
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	path := filepath.Join(dir, DBFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolt.ErrTimeout) {
		o := readOwner(dir)
		return nil, &InUseError{Dir: dir, PID: o.PID, Host: o.Host}
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &Store{dir: dir, db: db, now: now}
	if err := s.init(path); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// init tightens the database's mode, checks its schema, creates the buckets
// and records this process as the owner.
func (s *Store) init(path string) error {
	// bolt.Open's mode applies only to a file it creates.
	if fi, err := os.Stat(path); err != nil {
		return fmt.Errorf("stat state: %w", err)
	} else if fi.Mode().Perm() != 0o600 {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("restrict state mode: %w", err)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNodes, bucketMeta, bucketJournal} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n > schemaVersion {
				return fmt.Errorf("schema %q is newer than this kthw-controller (%d); upgrade it", v, schemaVersion)
			}
			return nil
		}
		return meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion)))
	})
	if err != nil {
		return fmt.Errorf("initialize state %s: %w", path, err)
	}
	host, _ := os.Hostname()
	if err := writeOwner(s.dir, owner{PID: os.Getpid(), Host: host, Since: s.now().UTC()}); err != nil {
		return fmt.Errorf("record workspace owner: %w", err)
	}
	return nil
}

// Dir returns the workspace directory.
func (s *Store) Dir() string { return s.dir }

// Close releases the workspace. It does not wait for or cancel calls in
// progress in other goroutines.
func (s *Store) Close() error {
	// Remove the owner file while still holding the lock, so that it
	// never removes a successor's.
	if err := os.Remove(filepath.Join(s.dir, OwnerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = s.db.Close()
		return fmt.Errorf("remove workspace owner: %w", err)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state: %w", err)
	}
	return nil
}

func writeOwner(dir string, o owner) error {
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, OwnerFile+".*.part")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, OwnerFile))
}

// readOwner returns what OwnerFile says; the zero owner if it is missing or
// unreadable (the holder may not have written it yet).
func readOwner(dir string) owner {
	var o owner
	data, err := os.ReadFile(filepath.Join(dir, OwnerFile))
	if err == nil {
		_ = json.Unmarshal(data, &o)
	}
	return o
}

// update runs fn in a read-write transaction after checking ctx.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

// view runs fn in a read-only transaction after checking ctx.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}
