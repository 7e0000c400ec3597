package sshx_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kthw/kthw/controller/internal/sshdtest"
	"github.com/kthw/kthw/controller/sshx"
)

func TestMain(m *testing.M) { sshdtest.Main(m) }

func target(s *sshdtest.Server, user string) sshx.Target {
	return sshx.Target{User: user, Host: s.Host, Port: s.Port}
}

func dial(t *testing.T, s *sshdtest.Server, user string, o sshx.Options) *ssh.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sshx.Dial(ctx, target(s, user), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func opts(s *sshdtest.Server, knownHosts string) sshx.Options {
	return sshx.Options{IdentityFiles: []string{s.ClientKeyFile}, KnownHostsFile: knownHosts, ConnectTimeout: 10 * time.Second}
}

func TestDialRootWithKey(t *testing.T) {
	s := sshdtest.Start(t)
	c := dial(t, s, "root", opts(s, s.WriteKnownHosts(t)))
	out, err := sshx.Run(context.Background(), c, "id -un", nil)
	if err != nil || string(out) != "root\n" {
		t.Fatalf("id -un = %q, %v", out, err)
	}
}

func TestDialUnknownHostStrict(t *testing.T) {
	s := sshdtest.Start(t)
	kh := filepath.Join(t.TempDir(), "known_hosts") // does not exist
	_, err := sshx.Dial(context.Background(), target(s, "root"), opts(s, kh))
	if !errors.Is(err, sshx.ErrHostKeyUnknown) {
		t.Fatalf("err = %v, want ErrHostKeyUnknown", err)
	}
	for _, want := range []string{"dial root@" + s.Addr + ":", "[127.0.0.1]:", "--accept-new", kh, ssh.FingerprintSHA256(s.HostKey)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(kh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("strict dial created %s", kh)
	}
	t.Log(err)
}

func TestDialAcceptNew(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.WithHostKeyTypes(sshdtest.KeyEd25519, sshdtest.KeyECDSA))
	kh := filepath.Join(t.TempDir(), "ws", ".ssh", "known_hosts")
	o := opts(s, kh)
	o.AcceptNew = true
	c := dial(t, s, "root", o)
	c.Close()

	fi, err := os.Stat(kh)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(kh)); di.Mode().Perm() != 0o700 {
		t.Errorf("known_hosts dir mode %v, want 0700", di.Mode().Perm())
	}
	data, _ := os.ReadFile(kh)
	if lines := strings.Count(string(data), "\n"); lines != 1 {
		t.Errorf("known_hosts has %d lines:\n%s", lines, data)
	}
	_, _, _, _, _, err = ssh.ParseKnownHosts(data)
	if err != nil {
		t.Fatalf("parse written known_hosts: %v\n%s", err, data)
	}

	// Strict now, and the one known key type is what gets negotiated.
	o.AcceptNew = false
	dial(t, s, "root", o)
	o.AcceptNew = true // accepting again must not append a duplicate
	dial(t, s, "root", o)
	if again, _ := os.ReadFile(kh); !bytes.Equal(again, data) {
		t.Errorf("known_hosts changed on a known host:\n%s", again)
	}
}

func TestDialChangedHostKey(t *testing.T) {
	s := sshdtest.Start(t)
	kh := s.WriteKnownHosts(t)
	before, _ := os.ReadFile(kh)
	old := s.HostKey
	s.RotateHostKeys(t)

	for _, accept := range []bool{false, true} {
		o := opts(s, kh)
		o.AcceptNew = accept
		_, err := sshx.Dial(context.Background(), target(s, "root"), o)
		if !errors.Is(err, sshx.ErrHostKeyChanged) {
			t.Fatalf("accept-new=%v: err = %v, want ErrHostKeyChanged", accept, err)
		}
		for _, want := range []string{
			"host key for [127.0.0.1]:",
			"changed: known_hosts has ssh-ed25519 " + ssh.FingerprintSHA256(old),
			"server offered ssh-ed25519 " + ssh.FingerprintSHA256(s.HostKey),
			"possible man-in-the-middle",
			"remove the old line (" + kh + ":1)",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
		t.Log(err)
	}
	if after, _ := os.ReadFile(kh); !bytes.Equal(after, before) {
		t.Errorf("known_hosts changed:\n%s", after)
	}
}

// The x/crypto/ssh pitfall: the server has several host keys, known_hosts only the
// ed25519 one. x/crypto prefers ECDSA/RSA by default, so without HostKeyAlgorithms the known
// host would look changed.
func TestDialHostKeyAlgorithms(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.WithHostKeyTypes(sshdtest.KeyEd25519, sshdtest.KeyECDSA, sshdtest.KeyRSA))
	kh := s.WriteKnownHosts(t, s.HostKeys[0])

	// Show that the pitfall is real against this server.
	cb, err := knownhosts.New(kh)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.ClientConfig("root")
	cfg.HostKeyCallback = cb
	if c, err := ssh.Dial("tcp", s.Addr, cfg); err == nil {
		c.Close()
		t.Log("x/crypto's default host key order no longer trips over this (fine, test still useful)")
	} else if !strings.Contains(err.Error(), "key mismatch") {
		t.Fatalf("naive dial: %v", err)
	}

	c := dial(t, s, "root", opts(s, kh))
	if _, err := sshx.Run(context.Background(), c, "true", nil); err != nil {
		t.Fatal(err)
	}

	// Only the RSA key known: the rsa-sha2 algorithms get offered.
	kh = s.WriteKnownHosts(t, s.HostKeys[2])
	dial(t, s, "root", opts(s, kh))
}

// known_hosts has a key type the server no longer has at all.
func TestDialKnownKeyTypeGone(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.WithHostKeyTypes(sshdtest.KeyECDSA))
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	kh := s.WriteKnownHosts(t, signer.PublicKey())
	_, err := sshx.Dial(context.Background(), target(s, "root"), opts(s, kh))
	if !errors.Is(err, sshx.ErrHostKeyChanged) || !strings.Contains(err.Error(), "server offered only key types ecdsa-sha2-nistp256") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

func TestDialWrongKey(t *testing.T) {
	s := sshdtest.Start(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "")
	keyFile := filepath.Join(t.TempDir(), "id_other")
	os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600)
	o := opts(s, s.WriteKnownHosts(t))
	o.IdentityFiles = []string{keyFile}
	_, err := sshx.Dial(context.Background(), target(s, sshdtest.UserSudo), o)
	if !errors.Is(err, sshx.ErrAuthFailed) {
		t.Fatalf("err = %v, want ErrAuthFailed", err)
	}
	want := "dial " + sshdtest.UserSudo + "@" + s.Addr + ": authentication failed for user " + sshdtest.UserSudo + " with key(s) " + keyFile + " (ssh-ed25519 SHA256:"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\nwant prefix %q", err, want)
	}
	t.Log(err)
}

func TestDialEncryptedKey(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	keyFile := filepath.Join(t.TempDir(), "id_enc")
	os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600)
	o := sshx.Options{IdentityFiles: []string{keyFile}, KnownHostsFile: filepath.Join(t.TempDir(), "kh")}
	_, err := sshx.Dial(context.Background(), sshx.Target{User: "root", Host: "127.0.0.1", Port: 1}, o)
	if err == nil || !strings.Contains(err.Error(), "identity file "+keyFile+" is encrypted") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

func TestDialConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	kh := filepath.Join(t.TempDir(), "kh")
	key := writeKey(t)
	_, err = sshx.Dial(context.Background(), sshx.Target{User: "root", Host: "127.0.0.1", Port: port},
		sshx.Options{IdentityFiles: []string{key}, KnownHostsFile: kh})
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if strings.Count(err.Error(), "refused") != 1 || !strings.HasPrefix(err.Error(), "dial root@127.0.0.1:") {
		t.Errorf("not one clear line: %v", err)
	}
	t.Log(err)
}

// A port that accepts but never speaks SSH: the connect timeout bounds the handshake, and
// a cancelled ctx aborts it.
func TestDialHandshakeTimeoutAndCancel(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	tg := sshx.Target{User: "root", Host: "127.0.0.1", Port: port}
	o := sshx.Options{IdentityFiles: []string{writeKey(t)}, KnownHostsFile: filepath.Join(t.TempDir(), "kh"), ConnectTimeout: 300 * time.Millisecond}

	start := time.Now()
	_, err = sshx.Dial(context.Background(), tg, o)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timeout took %v", d)
	}
	t.Log(err)

	o.ConnectTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = sshx.Dial(ctx, tg, o)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

func TestDialProxyJump(t *testing.T) {
	s := sshdtest.Start(t)
	kh := s.WriteKnownHosts(t)
	o := opts(s, kh)
	jump := target(s, "root")
	o.Jump = &jump
	ctx := context.Background()
	c, err := sshx.Dial(ctx, target(s, sshdtest.UserSudo), o)
	if err != nil {
		t.Fatal(err)
	}
	out, err := sshx.Run(ctx, c, "id -un; echo $SSH_CLIENT", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), sshdtest.UserSudo+"\n127.0.0.1 ") {
		t.Errorf("output %q", out)
	}
	if c.RemoteAddr().String() != s.Addr {
		t.Errorf("RemoteAddr = %v, want %s", c.RemoteAddr(), s.Addr)
	}

	// Closing the client closes the jump connection too: both sessions end in sshd's log.
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(s.Log(), "Closing connection to") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("jump connection not closed; log:\n%s", s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// An unknown jump host fails with a clear error naming the jump.
	o.KnownHostsFile = filepath.Join(t.TempDir(), "empty")
	_, err = sshx.Dial(ctx, target(s, "root"), o)
	if !errors.Is(err, sshx.ErrHostKeyUnknown) || !strings.Contains(err.Error(), "via jump host root@"+s.Addr) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

func TestRun(t *testing.T) {
	s := sshdtest.Start(t)
	c := dial(t, s, "root", opts(s, s.WriteKnownHosts(t)))
	ctx := context.Background()

	out, err := sshx.Run(ctx, c, "tr a-z A-Z", strings.NewReader("hello stdin\n"))
	if err != nil || string(out) != "HELLO STDIN\n" {
		t.Fatalf("tr = %q, %v", out, err)
	}

	out, err = sshx.Run(ctx, c, "echo partial; echo oops >&2; exit 3", nil)
	var re *sshx.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("err = %T %v", err, err)
	}
	if re.ExitCode != 3 || re.Stderr != "oops\n" || re.Op != "run" || re.Host != s.Addr || re.User != "root" || string(out) != "partial\n" {
		t.Errorf("RemoteError = %+v, out %q", re, out)
	}
	if want := "run echo partial; echo oops >&2; exit 3 on " + s.Addr + ": exit status 3: oops"; err.Error() != want {
		t.Errorf("Error() = %q\nwant       %q", err, want)
	}

	arg := "it's $HOME; `x` \\ \"q\"\n"
	out, err = sshx.Run(ctx, c, sshx.Command("printf", "%s", arg), nil)
	if err != nil || string(out) != arg {
		t.Errorf("quoted printf = %q, %v", out, err)
	}

	// Cancel: Run returns at once and the remote command sees its stdin close.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	pr, pw := io.Pipe() // never written: the command waits for stdin
	defer pw.Close()
	marker := filepath.Join(t.TempDir(), "ended")
	start := time.Now()
	_, err = sshx.Run(cctx, c, "cat >/dev/null; touch "+sshx.Quote(marker), pr)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("remote command did not see stdin close after cancel")
		}
	}
	// The client is still usable.
	if _, err := sshx.Run(ctx, c, "true", nil); err != nil {
		t.Fatal(err)
	}
}

func TestSudo(t *testing.T) {
	s := sshdtest.Start(t)
	kh := s.WriteKnownHosts(t)
	ctx := context.Background()

	c := dial(t, s, sshdtest.UserSudo, opts(s, kh))
	out, err := sshx.Run(ctx, c, sshx.SudoPrefix(sshdtest.UserSudo)+"id -un", nil)
	if err != nil || string(out) != "root\n" {
		t.Fatalf("sudo id = %q, %v", out, err)
	}

	c = dial(t, s, sshdtest.UserPassword, opts(s, kh))
	_, err = sshx.Run(ctx, c, sshx.SudoPrefix(sshdtest.UserPassword)+"id -un", nil)
	if !errors.Is(err, sshx.ErrSudoPassword) {
		t.Fatalf("err = %v, want ErrSudoPassword", err)
	}
	want := "sudo on " + s.Addr + " needs a password for " + sshdtest.UserPassword + "; kthw only runs sudo -n: grant NOPASSWD or connect as root"
	if err.Error() != want {
		t.Errorf("Error() = %q\nwant %q", err, want)
	}
}

func TestKeepAlive(t *testing.T) {
	s := sshdtest.Start(t)
	o := opts(s, s.WriteKnownHosts(t))
	o.KeepAlive = 50 * time.Millisecond
	c := dial(t, s, "root", o)
	time.Sleep(300 * time.Millisecond) // several keepalives answered
	if _, err := sshx.Run(context.Background(), c, "true", nil); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T) string {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "")
	f := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(f, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// An in-process ssh-agent on a unix socket: agent-only auth, and an encrypted identity file
// whose key the agent holds.
func TestDialAgent(t *testing.T) {
	s := sshdtest.Start(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv, Comment: "test"}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				agent.ServeAgent(keyring, c)
			}()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)

	// The agent's key is not authorized yet: auth fails and names the agent key.
	kh := s.WriteKnownHosts(t)
	o := sshx.Options{UseAgent: true, KnownHostsFile: kh}
	_, err = sshx.Dial(context.Background(), target(s, "root"), o)
	if !errors.Is(err, sshx.ErrAuthFailed) || !strings.Contains(err.Error(), "agent: ssh-ed25519 SHA256:") {
		t.Fatalf("err = %v", err)
	}

	// Agent-only auth with the server's client key.
	if err := keyring.Add(agent.AddedKey{PrivateKey: clientPrivateKey(t, s)}); err != nil {
		t.Fatal(err)
	}
	dial(t, s, "root", o)

	// An encrypted identity file is fine when the agent holds its key.
	block, _ := ssh.MarshalPrivateKeyWithPassphrase(clientPrivateKey(t, s), "", []byte("secret"))
	enc := filepath.Join(t.TempDir(), "id_enc")
	os.WriteFile(enc, pem.EncodeToMemory(block), 0o600)
	o.IdentityFiles = []string{enc}
	dial(t, s, "root", o)
}

func clientPrivateKey(t *testing.T, s *sshdtest.Server) any {
	t.Helper()
	data, err := os.ReadFile(s.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
