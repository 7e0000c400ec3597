package module

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// stderrTailLines is how many of its last stderr lines a failed helper
// command reports in its *pkg.ExitError.
const stderrTailLines = 8

// ExecRunner returns the pkg.Runner modules use for their helper commands
// (package managers, sysctl, modprobe, ...): each command runs directly, in
// its own process group (killed as a group when ctx ends), with the minimal
// environment BasePath/BaseLang plus the given entries, stdin from the
// given reader or /dev/null, and stdout and stderr streamed line by line to
// env's log. Stdout is also returned; a non-zero exit is a *pkg.ExitError
// with the tail of stderr.
func ExecRunner(env *Env) pkg.Runner { return execRunner{env: env} }

type execRunner struct{ env *Env }

func (r execRunner) Run(ctx context.Context, argv []string, extraEnv []string, stdin io.Reader) ([]byte, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("run: argv is empty")
	}
	env := append([]string{"PATH=" + BasePath, "LANG=" + BaseLang}, extraEnv...)
	var out bytes.Buffer
	r.env.info("running: " + quote(argv))
	st, err := runProcess(ctx, r.env, process{argv: argv, env: env, stdin: stdin, stdout: &out})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if st.code != 0 {
		return out.Bytes(), &pkg.ExitError{Argv: argv, Code: st.code, Stderr: strings.Join(st.stderrTail, "\n")}
	}
	return out.Bytes(), nil
}

// process is one command a module runs.
type process struct {
	argv []string
	// env is the command's whole environment; argv[0] is looked up in its
	// PATH, not the agent's.
	env []string
	// dir is the working directory, already under Env.Root; "" inherits.
	dir string
	// stdin is the command's input; nil is /dev/null.
	stdin io.Reader
	// stdout, when set, also receives what the command writes on stdout.
	stdout io.Writer
}

// processStatus is how a command that ran ended.
type processStatus struct {
	code       int            // exit code; 128+signal when killed
	signal     syscall.Signal // the signal that killed it, if one did
	stderrTail []string       // its last non-blank stderr lines
	duration   time.Duration
}

// runProcess runs p with stdout and stderr streamed line by line to env's
// log. The command leads its own process group, so that cancelling ctx kills
// everything it started, not just the direct child. A command that ran
// returns its status and a nil error whatever its exit code; the error is
// for a command that could not start. After the command exits, its output
// may stay open (a daemon it started may hold it) for outputGrace.
func runProcess(ctx context.Context, env *Env, p process) (processStatus, error) {
	path, err := lookPath(p.argv[0], pathOf(p.env))
	if err != nil {
		return processStatus{}, err
	}
	stdout := &lineWriter{emit: func(s string) { env.log(agentv1.LogLine_STREAM_STDOUT, s) }}
	stderr := &lineWriter{emit: func(s string) { env.log(agentv1.LogLine_STREAM_STDERR, s) }, keep: stderrTailLines}
	cmd := exec.CommandContext(ctx, path, p.argv[1:]...)
	cmd.Args[0] = p.argv[0]
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdin = p.stdin // nil: /dev/null
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if p.stdout != nil {
		cmd.Stdout = io.MultiWriter(p.stdout, stdout)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = outputGrace

	env.logger().InfoContext(ctx, "running command", "argv", p.argv, "dir", p.dir)
	start := time.Now()
	err = cmd.Run()
	stdout.flush()
	stderr.flush()
	st := processStatus{stderrTail: stderr.tail(), duration: time.Since(start)}
	if errors.Is(err, exec.ErrWaitDelay) {
		env.info("output still open after the command exited; stopped reading it")
		err = nil
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		st.code = exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.signal = ws.Signal()
			st.code = 128 + int(st.signal)
		}
	default:
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		return st, fmt.Errorf("run %s: %w", p.argv[0], err)
	}
	return st, nil
}
