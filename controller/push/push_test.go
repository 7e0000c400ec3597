package push_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/internal/sshdtest"
	"github.com/kthw/kthw/controller/push"
	"github.com/kthw/kthw/controller/sshx"
)

func TestMain(m *testing.M) { sshdtest.Main(m) }

// env is one sshd and a client for user on it.
type env struct {
	s    *sshdtest.Server
	c    *ssh.Client
	user string
}

func newEnv(t *testing.T, user string) env {
	t.Helper()
	s := sshdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sshx.Dial(ctx, sshx.Target{User: user, Host: s.Host, Port: s.Port}, sshx.Options{
		IdentityFiles:  []string{s.ClientKeyFile},
		KnownHostsFile: s.WriteKnownHosts(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return env{s: s, c: c, user: user}
}

// sessions counts the remote commands sshd has started so far.
func (e env) sessions() int { return strings.Count(e.s.Log(), "Starting session: command") }

// fakeBinary writes size random bytes and returns the path and their sha256.
func fakeBinary(t *testing.T, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "kthw-agent")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

// remoteDir is a fresh Pusher.Dir that does not exist yet (the parent is removed by the test
// framework, root-owned contents included, since tests run as root).
func remoteDir(t *testing.T) string {
	return filepath.Join(t.TempDir(), "var", "lib", "kthw", "agent")
}

func checkInstalled(t *testing.T, dir, sum, local string) {
	t.Helper()
	for _, p := range []string{dir, filepath.Join(dir, sum)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %v uid %d gid %d, want root-owned 0700 dir", p, fi.Mode(), st.Uid, st.Gid)
		}
	}
	bin := filepath.Join(dir, sum, push.BinaryName)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o700 || st.Uid != 0 {
		t.Errorf("%s: mode %v uid %d, want root-owned 0700 file", bin, fi.Mode(), st.Uid)
	}
	got, _ := os.ReadFile(bin)
	want, _ := os.ReadFile(local)
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s", bin, local)
	}
	checkNoParts(t, dir)
}

// checkNoParts fails if any .part file is left under dir, and any file other than
// kthw-agent.
func checkNoParts(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != push.BinaryName {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

func TestUploadAndReplace(t *testing.T) {
	e := newEnv(t, "root")
	local, sum := fakeBinary(t, 300<<10)
	p := push.Pusher{Dir: remoteDir(t)}
	ctx := context.Background()

	loc, err := push.Locate(local, p.Dir, "")
	if err != nil {
		t.Fatal(err)
	}
	before := e.sessions()
	res, err := p.Upload(ctx, e.c, e.user, local)
	if err != nil {
		t.Fatal(err)
	}
	want := push.Result{RemotePath: filepath.Join(p.Dir, sum, push.BinaryName), SHA256: sum, Uploaded: true, Bytes: 300 << 10}
	if res != want {
		t.Errorf("upload = %+v, want %+v", res, want)
	}
	if loc.RemotePath != want.RemotePath || loc.SHA256 != sum || loc.Uploaded {
		t.Errorf("Locate = %+v, want path and hash of %+v", loc, want)
	}
	if n := e.sessions() - before; n != 1 {
		t.Errorf("upload took %d remote commands, want 1", n)
	}
	checkInstalled(t, p.Dir, sum, local)

	// A damaged remote copy is replaced.
	if err := os.WriteFile(res.RemotePath, []byte("damaged"), 0o700); err != nil {
		t.Fatal(err)
	}
	res, err = p.Upload(ctx, e.c, e.user, local)
	if err != nil || res != want {
		t.Fatalf("upload over damaged copy = %+v, %v; want %+v", res, err, want)
	}
	checkInstalled(t, p.Dir, sum, local)
}

// A real binary (this test executable), uploaded through sudo, runs on the node.
func TestUploadSudoRealBinary(t *testing.T) {
	e := newEnv(t, sshdtest.UserSudo)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := push.Pusher{Dir: remoteDir(t)}
	ctx := context.Background()
	res, err := p.Upload(ctx, e.c, e.user, self)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(self)
	if !res.Uploaded || res.Bytes != fi.Size() {
		t.Errorf("upload = %+v, want uploaded %d bytes", res, fi.Size())
	}
	checkInstalled(t, p.Dir, res.SHA256, self)
	out, err := sshx.Run(ctx, e.c, sshx.SudoPrefix(e.user)+sshx.Command(res.RemotePath, "-test.list", "^TestUploadSudoRealBinary$"), nil)
	if err != nil || string(out) != "TestUploadSudoRealBinary\n" {
		t.Errorf("run uploaded binary = %q, %v", out, err)
	}
}

func TestUploadNoisyShell(t *testing.T) {
	e := newEnv(t, sshdtest.UserNoisy)
	local, sum := fakeBinary(t, 4096)
	p := push.Pusher{Dir: remoteDir(t)}
	ctx := context.Background()
	res, err := p.Upload(ctx, e.c, e.user, local)
	if err != nil || !res.Uploaded || res.SHA256 != sum {
		t.Fatalf("upload = %+v, %v", res, err)
	}
	checkInstalled(t, p.Dir, sum, local)
}

func TestUploadSudoPassword(t *testing.T) {
	e := newEnv(t, sshdtest.UserPassword)
	local, _ := fakeBinary(t, 4096)
	p := push.Pusher{Dir: remoteDir(t)}
	before := e.sessions()
	_, err := p.Upload(context.Background(), e.c, e.user, local)
	if !errors.Is(err, sshx.ErrSudoPassword) {
		t.Fatalf("err = %v, want ErrSudoPassword", err)
	}
	want := "push agent: sudo on " + e.s.Addr + " needs a password for kthwt-pw; kthw only runs sudo -n: grant NOPASSWD or connect as root"
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
	if n := e.sessions() - before; n != 1 {
		t.Errorf("took %d remote commands, want 1", n)
	}
	if _, err := os.Stat(p.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists: %v", p.Dir, err)
	}
}

// flipByte corrupts the byte at offset off.
type flipByte struct {
	r   io.Reader
	off int64
	pos int64
}

func (f *flipByte) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.off >= f.pos && f.off < f.pos+int64(n) {
		p[f.off-f.pos] ^= 0x40
	}
	f.pos += int64(n)
	return n, err
}

func TestUploadCorruptedOrTruncated(t *testing.T) {
	e := newEnv(t, sshdtest.UserSudo)
	const size = 200 << 10
	local, sum := fakeBinary(t, size)
	cases := map[string]struct {
		wrap  func(io.Reader) io.Reader
		bytes int64
	}{
		"corrupted": {func(r io.Reader) io.Reader { return &flipByte{r: r, off: 12345} }, size},
		"truncated": {func(r io.Reader) io.Reader { return io.LimitReader(r, size/2) }, size / 2},
		"empty":     {func(io.Reader) io.Reader { return strings.NewReader("") }, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := push.Pusher{Dir: remoteDir(t), WrapUpload: c.wrap}
			_, err := p.Upload(context.Background(), e.c, e.user, local)
			var ce *push.CorruptedError
			if !errors.Is(err, push.ErrCorrupted) || !errors.As(err, &ce) {
				t.Fatalf("err = %v, want ErrCorrupted", err)
			}
			want := "push agent: upload of kthw-agent to " + e.s.Addr + " corrupted: sha256 " + ce.Got + ", expected " + sum + "; nothing installed"
			if err.Error() != want || len(ce.Got) != 64 || ce.Got == sum {
				t.Errorf("err = %q\nwant  %q", err, want)
			}
			if ce.Bytes != c.bytes {
				t.Errorf("Bytes = %d, want %d", ce.Bytes, c.bytes)
			}
			if _, err := os.Stat(filepath.Join(p.Dir, sum, push.BinaryName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("binary installed: %v", err)
			}
			checkNoParts(t, p.Dir)

			// And a clean upload afterwards works.
			p.WrapUpload = nil
			if res, err := p.Upload(context.Background(), e.c, e.user, local); err != nil || !res.Uploaded {
				t.Fatalf("clean upload = %+v, %v", res, err)
			}
			checkInstalled(t, p.Dir, sum, local)
		})
	}
}

// stall sends the first half, then blocks until ctx ends.
type stall struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

func (s *stall) Read(p []byte) (int, error) {
	if s.left <= 0 {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}

func TestUploadCancelled(t *testing.T) {
	e := newEnv(t, sshdtest.UserSudo)
	local, sum := fakeBinary(t, 100<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	p := push.Pusher{Dir: remoteDir(t), WrapUpload: func(r io.Reader) io.Reader { return &stall{ctx: ctx, r: r, left: 50 << 10} }}
	start := time.Now()
	_, err := p.Upload(ctx, e.c, e.user, local)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	// The remote side cleans up after itself.
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries, _ := os.ReadDir(filepath.Join(p.Dir, sum))
		if len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after cancel: %v", entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUploadBadInput(t *testing.T) {
	e := newEnv(t, "root")
	if _, err := (push.Pusher{Dir: "relative"}).Upload(context.Background(), e.c, "root", "/nonexistent"); err == nil {
		t.Error("relative Dir accepted")
	}
	_, err := (push.Pusher{Dir: remoteDir(t)}).Upload(context.Background(), e.c, "root", filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing binary: %v", err)
	}
}

// ExecCommand runs the agent installed at its path, through sudo for other users, and exits
// with ExitNotInstalled (what controller/node uploads on) when no regular file is there.
func TestExecCommand(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"root", sshdtest.UserSudo} {
		t.Run(user, func(t *testing.T) {
			e := newEnv(t, user)
			ctx := context.Background()
			p := push.Pusher{Dir: remoteDir(t)}
			res, err := p.Upload(ctx, e.c, e.user, self)
			if err != nil {
				t.Fatal(err)
			}
			out, err := sshx.Run(ctx, e.c, push.ExecCommand(e.user, res.RemotePath, "-test.list", "^TestExecCommand$"), nil)
			if err != nil || string(out) != "TestExecCommand\n" {
				t.Fatalf("run installed agent = %q, %v", out, err)
			}

			link := filepath.Join(filepath.Dir(res.RemotePath), "link")
			if err := os.Symlink(res.RemotePath, link); err != nil {
				t.Fatal(err)
			}
			for _, missing := range []string{filepath.Join(p.Dir, "0000", push.BinaryName), filepath.Dir(res.RemotePath), link} {
				_, err = sshx.Run(ctx, e.c, push.ExecCommand(e.user, missing, "-test.list", "."), nil)
				var re *sshx.RemoteError
				if !errors.As(err, &re) || re.ExitCode != push.ExitNotInstalled || !strings.Contains(re.Stderr, "no agent installed at "+missing) {
					t.Errorf("%s: err = %v, want exit status %d saying no agent is installed", missing, err, push.ExitNotInstalled)
				}
			}
		})
	}
}
