package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// ErrSudoPassword is wrapped by errors from commands that failed because sudo -n needed a
// password (use errors.Is).
var ErrSudoPassword = errors.New("sudo needs a password")

// RemoteError is a remote command that ran and failed (non-zero exit, signal, or no exit
// status at all).
type RemoteError struct {
	Op       string // what the command was for: "run", "check agent", ...
	Cmd      string // the command line as sent
	Host     string // the server's address
	User     string // the SSH user
	ExitCode int    // -1 when the server sent no exit status
	Signal   string // the signal that killed it, if any
	Stderr   string // the tail of stderr
}

func (e *RemoteError) Error() string {
	if e.Is(ErrSudoPassword) {
		return SudoPasswordMessage(e.Host, e.User)
	}
	var b strings.Builder
	op := e.Op
	if op == "" || op == "run" {
		op = "run " + shorten(e.Cmd, 60)
	}
	fmt.Fprintf(&b, "%s on %s: ", op, e.Host)
	switch {
	case e.Signal != "":
		fmt.Fprintf(&b, "killed by signal %s", e.Signal)
	case e.ExitCode < 0:
		b.WriteString("exited without an exit status")
	default:
		fmt.Fprintf(&b, "exit status %d", e.ExitCode)
	}
	if s := shorten(strings.TrimSpace(e.Stderr), 400); s != "" {
		b.WriteString(": ")
		b.WriteString(s)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrSudoPassword) true when sudo refused for want of a password.
func (e *RemoteError) Is(target error) bool {
	return target == ErrSudoPassword && IsSudoPasswordRequired(e.Stderr)
}

// SudoPasswordMessage is the error text for a sudo that needs a password.
func SudoPasswordMessage(host, user string) string {
	return fmt.Sprintf("sudo on %s needs a password for %s; kthw only runs sudo -n: grant NOPASSWD or connect as root", host, user)
}

// SudoPrefix returns the prefix that runs a command as root for user: "" for root,
// "sudo -n " otherwise (never prompting).
func SudoPrefix(user string) string {
	if user == "root" {
		return ""
	}
	return "sudo -n "
}

// IsSudoPasswordRequired reports whether stderr is sudo refusing to run without a password
// (sudo -n, or no terminal to prompt on).
func IsSudoPasswordRequired(stderr string) bool {
	s := strings.ToLower(stderr)
	return strings.Contains(s, "sudo:") && (strings.Contains(s, "a password is required") ||
		strings.Contains(s, "a terminal is required") ||
		strings.Contains(s, "no tty present"))
}

// Run runs cmd on c through the login shell, with stdin (nil: empty) as its stdin, and
// returns its stdout. A command that fails is a *RemoteError.
//
// Cancelling ctx returns at once: Run sends SIGTERM and closes the session. The signal is
// best effort (OpenSSH refuses signals for root logins, and sudo'd commands are out of the
// user's reach), so what reliably reaches the command is its stdin closing and its output
// breaking: remote commands should exit on stdin EOF if they must not outlive a cancel.
func Run(ctx context.Context, c *ssh.Client, cmd string, stdin io.Reader) ([]byte, error) {
	return RunOp(ctx, c, "run", cmd, stdin)
}

// RunOp is Run with op naming the command's purpose in errors ("check agent"). Its stdout is
// returned even when err is a *RemoteError.
func RunOp(ctx context.Context, c *ssh.Client, op, cmd string, stdin io.Reader) ([]byte, error) {
	host := c.RemoteAddr().String()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", op, host, err)
	}
	s, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%s on %s: open session: %w", op, host, err)
	}
	defer s.Close()
	var stdout bytes.Buffer
	stderr := &TailBuffer{Max: 64 << 10}
	s.Stdin, s.Stdout, s.Stderr = stdin, &stdout, stderr
	if err := s.Start(cmd); err != nil {
		return nil, fmt.Errorf("%s on %s: start: %w", op, host, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGTERM)
		s.Close()
		// Do not wait for done: on a dead connection it may never come. The buffers stay
		// with the copying goroutines.
		return nil, fmt.Errorf("%s on %s: %w", op, host, ctx.Err())
	}
	out := stdout.Bytes()
	if err == nil {
		return out, nil
	}
	re := &RemoteError{Op: op, Cmd: cmd, Host: host, User: c.User(), Stderr: stderr.String()}
	var ee *ssh.ExitError
	var em *ssh.ExitMissingError
	switch {
	case errors.As(err, &ee):
		re.ExitCode, re.Signal = ee.ExitStatus(), ee.Signal()
	case errors.As(err, &em):
		re.ExitCode = -1
	default:
		return out, fmt.Errorf("%s on %s: %w", op, host, err)
	}
	return out, re
}

// TailBuffer keeps the last Max bytes written to it; it is safe for
// concurrent use (an SSH session writes stderr while callers read it).
type TailBuffer struct {
	Max int
	mu  sync.Mutex
	buf []byte
}

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.Max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
