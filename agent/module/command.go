package module

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

var _ Module = (*Command)(nil)

// BasePath and BaseLang make up the minimal environment of a command; the
// request's env entries are added to (and may override) them.
const (
	BasePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	BaseLang = "C.UTF-8"
)

// MaxLineSize bounds one streamed line of command output; longer lines are
// split.
const MaxLineSize = 64 << 10

// outputGrace is how long a command's output may stay open after the command
// exited (a daemon it started may hold it); then the agent stops reading.
const outputGrace = 5 * time.Second

// Command runs a program directly (no shell unless argv asks for one), with
// stdin on /dev/null and stdout and stderr streamed line by line.
type Command struct {
	argv    []string
	env     []string
	cwd     string
	creates string
	removes string
	timeout time.Duration
}

// ExitError is a command that ran and exited non-zero (or was killed).
type ExitError struct {
	Argv []string
	// Code is the exit code; 128+signal when a signal killed the command,
	// as a shell reports it.
	Code int
	// Signal is the signal that killed the command, if one did.
	Signal syscall.Signal
	// Stderr is the last line the command wrote on stderr.
	Stderr string
}

func (e *ExitError) Error() string {
	msg := "command exited " + strconv.Itoa(e.Code)
	if e.Signal != 0 {
		msg = "command killed by signal " + e.Signal.String()
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// NewCommand validates m and returns the module that runs it.
func NewCommand(m *agentv1.CommandModule) (*Command, error) {
	argv := m.GetArgv()
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("%w: argv is empty", ErrInvalid)
	}
	for _, kv := range m.GetEnv() {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("%w: env entry %q is not KEY=VALUE", ErrInvalid, kv)
		}
	}
	for _, p := range []struct{ field, path string }{
		{"cwd", m.GetCwd()}, {"creates", m.GetCreates()}, {"removes", m.GetRemoves()},
	} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return nil, fmt.Errorf("%w: %s %q is not an absolute path", ErrInvalid, p.field, p.path)
		}
	}
	if m.GetTimeoutSeconds() < 0 {
		return nil, fmt.Errorf("%w: timeout_seconds %d is negative", ErrInvalid, m.GetTimeoutSeconds())
	}
	env := []string{"PATH=" + BasePath, "LANG=" + BaseLang}
	return &Command{
		argv:    argv,
		env:     append(env, m.GetEnv()...),
		cwd:     m.GetCwd(),
		creates: m.GetCreates(),
		removes: m.GetRemoves(),
		timeout: time.Duration(m.GetTimeoutSeconds()) * time.Second,
	}, nil
}

// Check reports the command it would run, unless a guard skips it.
func (c *Command) Check(ctx context.Context, env *Env) (Result, error) {
	if reason, err := c.skip(env); err != nil || reason != "" {
		return Result{SkippedReason: reason}, err
	}
	return Result{Changed: true, Diff: "would run: " + quote(c.argv)}, nil
}

// Apply runs the command unless a guard skips it. A command that ran always
// counts as a change.
func (c *Command) Apply(ctx context.Context, env *Env) (Result, error) {
	if reason, err := c.skip(env); err != nil || reason != "" {
		if reason != "" {
			env.info("skipped: " + reason)
		}
		return Result{SkippedReason: reason}, err
	}
	return c.run(ctx, env)
}

// skip returns why the creates or removes guard skips the command, or "".
func (c *Command) skip(env *Env) (string, error) {
	if c.creates != "" {
		switch exists, err := pathExists(env.Path(c.creates)); {
		case err != nil:
			return "", fmt.Errorf("check creates: %w", err)
		case exists:
			return "creates: " + c.creates + " exists", nil
		}
	}
	if c.removes != "" {
		switch exists, err := pathExists(env.Path(c.removes)); {
		case err != nil:
			return "", fmt.Errorf("check removes: %w", err)
		case !exists:
			return "removes: " + c.removes + " does not exist", nil
		}
	}
	return "", nil
}

func (c *Command) run(ctx context.Context, env *Env) (Result, error) {
	runCtx := ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	dir := ""
	if c.cwd != "" {
		dir = env.Path(c.cwd)
	}
	if _, err := lookPath(c.argv[0], pathOf(c.env)); err != nil {
		return Result{}, err
	}
	env.info("running: " + quote(c.argv))
	st, err := runProcess(runCtx, env, process{argv: c.argv, env: c.env, dir: dir})
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if err != nil {
		return Result{}, err
	}
	if runCtx.Err() != nil {
		// Our own timeout, not the caller's: the module ran and failed.
		return Result{Changed: true}, fmt.Errorf("command timed out after %s and was killed", c.timeout)
	}
	if st.code == 0 {
		env.info(fmt.Sprintf("exited 0 after %s", st.duration.Round(time.Millisecond)))
		return Result{Changed: true, Ran: true}, nil
	}
	xe := &ExitError{Argv: c.argv, Code: st.code, Signal: st.signal}
	if n := len(st.stderrTail); n > 0 {
		xe.Stderr = st.stderrTail[n-1]
	}
	return Result{Changed: true, Ran: true, ExitCode: xe.Code}, xe
}

// lookPath resolves name against pathEnv (the command's PATH, not the agent's).
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("find %s: %w in PATH %s", name, exec.ErrNotFound, pathEnv)
}

// pathOf returns the last PATH entry of env.
func pathOf(env []string) string {
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	return path
}

func pathExists(p string) (bool, error) {
	_, err := os.Lstat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

// quote renders argv for a human, quoting words a shell would split.
func quote(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`|&;<>()*?[]{}~#!") {
			a = strconv.Quote(a)
		}
		words[i] = a
	}
	return strings.Join(words, " ")
}

// lineWriter splits what a command writes into lines, at most MaxLineSize
// bytes each, and hands each to emit as valid UTF-8. exec calls Write from
// its own goroutine; the mutex orders it with flush and lastLine.
type lineWriter struct {
	emit func(string)
	// keep is how many of the last non-blank lines tail returns (at least 1).
	keep int

	mu   sync.Mutex
	buf  []byte
	last []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			take := min(len(p), MaxLineSize-len(w.buf))
			w.buf = append(w.buf, p[:take]...)
			p = p[take:]
			if len(w.buf) == MaxLineSize {
				w.line()
			}
			continue
		}
		if len(w.buf)+i > MaxLineSize {
			take := MaxLineSize - len(w.buf)
			w.buf = append(w.buf, p[:take]...)
			p = p[take:]
			w.line()
			continue
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		w.line()
	}
	return n, nil
}

// flush emits a last line that did not end in a newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.line()
	}
}

func (w *lineWriter) line() {
	s := strings.ToValidUTF8(string(bytes.TrimSuffix(w.buf, []byte{'\r'})), "\uFFFD")
	w.buf = w.buf[:0]
	if strings.TrimSpace(s) != "" {
		w.last = append(w.last, s)
		if n := max(w.keep, 1); len(w.last) > n {
			w.last = append(w.last[:0], w.last[len(w.last)-n:]...)
		}
	}
	w.emit(s)
}

// tail returns the last non-blank lines, oldest first.
func (w *lineWriter) tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.last...)
}
