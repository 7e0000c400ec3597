package module

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func TestExecRunnerOutputAndStreams(t *testing.T) {
	env := newRecorder(t, "")
	r := ExecRunner(&env.Env)
	out, err := r.Run(context.Background(),
		[]string{"sh", "-c", `echo "$FOO|$LANG"; cat; echo warn >&2`}, []string{"FOO=bar"}, strings.NewReader("in\n"))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := string(out), "bar|"+BaseLang+"\nin\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := env.stream(agentv1.LogLine_STREAM_STDOUT), []string{"bar|" + BaseLang, "in"}; !slices.Equal(got, want) {
		t.Errorf("streamed stdout = %q, want %q", got, want)
	}
	if got, want := env.stream(agentv1.LogLine_STREAM_STDERR), []string{"warn"}; !slices.Equal(got, want) {
		t.Errorf("streamed stderr = %q, want %q", got, want)
	}
}

func TestExecRunnerExitError(t *testing.T) {
	env := newRecorder(t, "")
	script := `for i in $(seq 1 20); do echo "line $i" >&2; done; echo partial; exit 4`
	out, err := ExecRunner(&env.Env).Run(context.Background(), []string{"sh", "-c", script}, nil, nil)
	var xe *pkg.ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("Run: err = %v, want *pkg.ExitError", err)
	}
	if xe.Code != 4 || xe.Argv[0] != "sh" {
		t.Errorf("ExitError = %+v", xe)
	}
	lines := strings.Split(xe.Stderr, "\n")
	if len(lines) != stderrTailLines || lines[len(lines)-1] != "line 20" || lines[0] != "line 13" {
		t.Errorf("stderr tail = %q, want lines 13..20", lines)
	}
	if string(out) != "partial\n" {
		t.Errorf("stdout = %q, want what the command wrote", out)
	}
	if !strings.HasPrefix(err.Error(), "sh exited 4: line 13; ") {
		t.Errorf("error = %q", err)
	}
}

func TestExecRunnerStdinDevNull(t *testing.T) {
	env := newRecorder(t, "")
	out, err := ExecRunner(&env.Env).Run(context.Background(), []string{"cat"}, nil, nil)
	if err != nil || len(out) != 0 {
		t.Fatalf("Run = %q, %v; want empty stdin", out, err)
	}
}

func TestExecRunnerNotFound(t *testing.T) {
	env := newRecorder(t, "")
	_, err := ExecRunner(&env.Env).Run(context.Background(), []string{"kthw-no-such-command"}, nil, nil)
	if !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("Run: err = %v, want exec.ErrNotFound", err)
	}
}

func TestExecRunnerCancel(t *testing.T) {
	env := newRecorder(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ExecRunner(&env.Env).Run(ctx, []string{"sh", "-c", "sleep 60 & wait"}, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: err = %v, want the context's error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %s after cancel", d)
	}
}
