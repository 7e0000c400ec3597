package state

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/ssh"
)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(%s) error: %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func hostKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

func TestOpenModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ws", "lab")
	s := openT(t, dir)
	for path, want := range map[string]os.FileMode{
		dir:                           0o700 | os.ModeDir,
		filepath.Join(dir, DBFile):    0o600,
		filepath.Join(dir, OwnerFile): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("mode of %s = %v; want %v", path, fi.Mode(), want)
		}
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %q; want %q", s.Dir(), dir)
	}
}

func TestOpenTightensExistingMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, DBFile)
	s := openT(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openT(t, dir)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after reopen = %v, %v; want 0600", fi.Mode(), err)
	}
}

// TestOpenTwice: a second Open of a workspace in use fails at once and
// names the holder.
func TestOpenTwice(t *testing.T) {
	dir := t.TempDir()
	first := openT(t, dir)

	start := time.Now()
	_, err := Open(dir, Options{})
	elapsed := time.Since(start)
	var inUse *InUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open() error = %v; want an *InUseError", err)
	}
	want := fmt.Sprintf("workspace %s is in use by another kthw-controller (pid %d)", dir, os.Getpid())
	if err.Error() != want {
		t.Errorf("second Open() error = %q; want %q", err, want)
	}
	if elapsed > time.Second {
		t.Errorf("second Open() took %v; want it to fail at once", elapsed)
	}

	// Released by Close.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, OwnerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("owner file after Close: %v; want it removed", err)
	}
	openT(t, dir)
}

func TestInUseErrorUnknownPID(t *testing.T) {
	err := &InUseError{Dir: "/w"}
	if got, want := err.Error(), "workspace /w is in use by another kthw-controller (pid unknown)"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	err = &InUseError{Dir: "/w", PID: 7, Host: "elsewhere.invalid"}
	if got, want := err.Error(), "workspace /w is in use by another kthw-controller (pid 7 on elsewhere.invalid)"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}

func TestNodesRoundTrip(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := Open(t.TempDir(), Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	key := hostKey(t)
	cp := Node{
		Name: "cp-1", Role: "control-plane", Provider: "proxmox", Phase: PhaseCreating,
		Address: netip.MustParsePrefix("10.200.0.11/24"),
	}
	if err := s.PutNode(ctx, cp); err != nil {
		t.Fatal(err)
	}
	created := clock
	clock = clock.Add(time.Minute)
	if err := s.UpdateNode(ctx, "cp-1", func(n *Node) error {
		n.Phase, n.ProviderID, n.HostKey = PhaseCreated, "104", key
		n.AgentSHA256 = strings.Repeat("ab", 32)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutNode(ctx, Node{Name: "worker-1", Role: "worker", Provider: "proxmox", Phase: PhaseCreating}); err != nil {
		t.Fatal(err)
	}

	got, err := s.GetNode(ctx, "cp-1")
	if err != nil {
		t.Fatal(err)
	}
	want := cp
	want.Phase, want.ProviderID, want.HostKey, want.AgentSHA256 = PhaseCreated, "104", key, strings.Repeat("ab", 32)
	want.CreatedAt, want.UpdatedAt = created, clock
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetNode() = %+v; want %+v", got, want)
	}

	list, err := s.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "cp-1" || list[1].Name != "worker-1" || list[1].Address.IsValid() {
		t.Errorf("ListNodes() = %+v", list)
	}

	if err := s.DeleteNode(ctx, "worker-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNode(ctx, "worker-1"); err != nil {
		t.Errorf("second DeleteNode() error = %v; want nil", err)
	}
	if _, err := s.GetNode(ctx, "worker-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetNode(deleted) error = %v; want ErrNotFound", err)
	}
	if err := s.UpdateNode(ctx, "worker-1", func(*Node) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateNode(deleted) error = %v; want ErrNotFound", err)
	}
}

func TestPutNodeInvalid(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir())
	privateKey := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
	for name, n := range map[string]Node{
		"no name":      {Phase: PhaseCreating},
		"bad phase":    {Name: "a", Phase: "running"},
		"private key":  {Name: "a", Phase: PhaseCreated, HostKey: privateKey},
		"two keys":     {Name: "a", Phase: PhaseCreated, HostKey: hostKey(t) + "\n" + hostKey(t)},
		"short sha256": {Name: "a", Phase: PhaseCreated, AgentSHA256: "abcd"},
	} {
		if err := s.PutNode(ctx, n); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: PutNode() error = %v; want ErrInvalid", name, err)
		}
	}
	if err := s.PutNode(ctx, Node{Name: "a", Phase: PhaseCreated}); err != nil {
		t.Fatal(err)
	}
	abort := errors.New("abort")
	if err := s.UpdateNode(ctx, "a", func(n *Node) error { n.Phase = PhaseDestroying; return abort }); !errors.Is(err, abort) {
		t.Errorf("UpdateNode() error = %v; want abort", err)
	}
	if err := s.UpdateNode(ctx, "a", func(n *Node) error { n.Name = "b"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Errorf("UpdateNode(rename) error = %v; want ErrInvalid", err)
	}
	if n, _ := s.GetNode(ctx, "a"); n.Phase != PhaseCreated {
		t.Errorf("phase after aborted updates = %q; want created", n.Phase)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir())
	if _, err := s.GetMeta(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta() on a new workspace error = %v; want ErrNotFound", err)
	}
	if err := s.SetMeta(ctx, Meta{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetMeta(empty) error = %v; want ErrInvalid", err)
	}
	if err := s.SetMeta(ctx, Meta{ClusterName: "lab", ConfigHash: "sha256:00ff"}); err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMeta(ctx)
	if err != nil || m.ClusterName != "lab" || m.ConfigHash != "sha256:00ff" || m.UpdatedAt.IsZero() {
		t.Fatalf("GetMeta() = %+v, %v", m, err)
	}
}

func TestJournal(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir())
	entries := []JournalEntry{
		{Node: "cp-1", Step: "containerd", Status: StepStarted},
		{Node: "cp-1", Step: "containerd", Status: StepDone},
		{Node: "worker-1", Step: "containerd", Status: StepStarted},
		{Step: "pki", Status: StepDone},
		{Node: "worker-1", Step: "containerd", Status: StepFailed, Message: "apt-get exited 100"},
		{Node: "cp-1", Step: "kubeadm-init", Status: StepStarted},
	}
	for i, e := range entries {
		seq, err := s.AppendJournal(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Errorf("AppendJournal() seq = %d; want %d", seq, i+1)
		}
	}
	all, err := s.Journal(ctx)
	if err != nil || len(all) != len(entries) {
		t.Fatalf("Journal() = %d entries, %v; want %d", len(all), err, len(entries))
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) || e.Step != entries[i].Step || e.Status != entries[i].Status || e.Time.IsZero() {
			t.Errorf("Journal()[%d] = %+v", i, e)
		}
	}

	last, err := s.LastSteps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range last {
		got = append(got, fmt.Sprintf("%d %s/%s %s", e.Seq, e.Node, e.Step, e.Status))
	}
	want := []string{"2 cp-1/containerd done", "4 /pki done", "5 worker-1/containerd failed", "6 cp-1/kubeadm-init started"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LastSteps() = %q; want %q", got, want)
	}

	if _, err := s.AppendJournal(ctx, JournalEntry{Node: "a", Status: StepDone}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendJournal(no step) error = %v; want ErrInvalid", err)
	}
	if _, err := s.AppendJournal(ctx, JournalEntry{Step: "a", Status: "ok"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("AppendJournal(bad status) error = %v; want ErrInvalid", err)
	}
}

func TestCanceledContext(t *testing.T) {
	s := openT(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.PutNode(ctx, Node{Name: "a", Phase: PhaseCreating}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutNode() error = %v; want context.Canceled", err)
	}
	if _, err := s.ListNodes(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ListNodes() error = %v; want context.Canceled", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("99"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "newer than this kthw-controller") {
		t.Fatalf("Open() error = %v; want a newer-schema error", err)
	}
	// The failed Open released the lock.
	if _, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, &bolt.Options{Timeout: 100 * time.Millisecond}); err != nil {
		t.Fatalf("lock not released after failed Open: %v", err)
	}
}

// TestAbandonedStore: a store dropped without Close (its lock released by the
// kernel, its owner file left behind) opens again with its records.
func TestAbandonedStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutNode(ctx, Node{Name: "cp-1", Phase: PhaseCreating}); err != nil {
		t.Fatal(err)
	}
	_ = s.db.Close() // what the kernel does for a dead process: no owner cleanup

	s2 := openT(t, dir)
	if n, err := s2.GetNode(ctx, "cp-1"); err != nil || n.Phase != PhaseCreating {
		t.Fatalf("GetNode() after abandon = %+v, %v", n, err)
	}
}

const holderEnv = "KTHW_STATE_TEST_HOLDER"

// TestHolderProcess is not a test: run by TestKilledHolder as a child, it
// opens the workspace, records a node being created and waits to be killed.
func TestHolderProcess(t *testing.T) {
	dir := os.Getenv(holderEnv)
	if dir == "" {
		t.Skip("helper process for TestKilledHolder")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := s.PutNode(context.Background(), Node{Name: "cp-1", Role: "control-plane", Provider: "proxmox", Phase: PhaseCreating}); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed before this ends
	os.Exit(2)
}

// TestKilledHolder runs a real second process that holds the workspace: a
// concurrent Open names its pid; after it is killed with SIGKILL mid-run, the
// next Open succeeds and finds the node it recorded.
func TestKilledHolder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), holderEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("holder said %q, %v; want ready", line, err)
	}

	start := time.Now()
	_, err = Open(dir, Options{})
	want := fmt.Sprintf("workspace %s is in use by another kthw-controller (pid %d)", dir, cmd.Process.Pid)
	if err == nil || err.Error() != want {
		t.Fatalf("Open() while held error = %v; want %q", err, want)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Open() while held took %v; want it to fail at once", d)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	s := openT(t, dir)
	n, err := s.GetNode(context.Background(), "cp-1")
	if err != nil || n.Phase != PhaseCreating || n.Provider != "proxmox" {
		t.Fatalf("GetNode() after the holder was killed = %+v, %v; want the creating record", n, err)
	}
	if o := readOwner(dir); o.PID != os.Getpid() {
		t.Errorf("owner after reopen = %+v; want pid %d", o, os.Getpid())
	}
}
