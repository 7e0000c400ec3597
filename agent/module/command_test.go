package module

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

func newCommand(t *testing.T, m *agentv1.CommandModule) *Command {
	t.Helper()
	c, err := NewCommand(m)
	if err != nil {
		t.Fatalf("NewCommand: %v", err)
	}
	return c
}

func TestNewCommandInvalid(t *testing.T) {
	tests := map[string]*agentv1.CommandModule{
		"no argv":          {},
		"empty argv[0]":    {Argv: []string{""}},
		"env without =":    {Argv: []string{"true"}, Env: []string{"FOO"}},
		"env without key":  {Argv: []string{"true"}, Env: []string{"=x"}},
		"relative cwd":     {Argv: []string{"true"}, Cwd: "tmp"},
		"relative creates": {Argv: []string{"true"}, Creates: "x"},
		"relative removes": {Argv: []string{"true"}, Removes: "./x"},
		"negative timeout": {Argv: []string{"true"}, TimeoutSeconds: -1},
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewCommand(m); !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewCommand: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestCommandStreamsAndExitCode(t *testing.T) {
	env := newRecorder(t, "")
	c := newCommand(t, &agentv1.CommandModule{
		Argv: []string{"sh", "-c", "echo one; echo two >&2; printf 'three'; echo last error >&2; exit 3"},
	})
	res, err := c.Apply(context.Background(), &env.Env)
	var xe *ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("Apply: err = %v, want *ExitError", err)
	}
	if got, want := err.Error(), "command exited 3: last error"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	if !res.Ran || res.ExitCode != 3 || !res.Changed {
		t.Errorf("result = %+v, want ran with exit code 3", res)
	}
	if got, want := env.stream(agentv1.LogLine_STREAM_STDOUT), []string{"one", "three"}; !slices.Equal(got, want) {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := env.stream(agentv1.LogLine_STREAM_STDERR), []string{"two", "last error"}; !slices.Equal(got, want) {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}

func TestCommandEnvironment(t *testing.T) {
	env := newRecorder(t, "")
	if err := os.Mkdir(env.Path("/work"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KTHW_LEAK", "agent-only")
	c := newCommand(t, &agentv1.CommandModule{
		Argv: []string{"sh", "-c", `echo "$FOO|$LANG|$PATH|$KTHW_LEAK|$(pwd)"; cat`},
		Env:  []string{"FOO=a=b"},
		Cwd:  "/work",
	})
	res, err := c.Apply(context.Background(), &env.Env)
	if err != nil || res.ExitCode != 0 || !res.Ran {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	want := "a=b|" + BaseLang + "|" + BasePath + "||" + env.Path("/work")
	if got := env.stream(agentv1.LogLine_STREAM_STDOUT); !slices.Equal(got, []string{want}) {
		t.Errorf("stdout = %q, want %q (stdin must be empty)", got, want)
	}
}

func TestCommandGuards(t *testing.T) {
	ctx := context.Background()
	env := newRecorder(t, "")
	marker := "/var/lib/done"
	c := newCommand(t, &agentv1.CommandModule{
		Argv:    []string{"sh", "-c", "mkdir -p $(dirname $1) && touch $1", "sh", env.Path(marker)},
		Creates: marker,
	})
	res, err := c.Check(ctx, &env.Env)
	if err != nil || !res.Changed || !strings.HasPrefix(res.Diff, "would run: sh -c ") {
		t.Fatalf("Check before = %+v, %v; want would run", res, err)
	}
	if res, err := c.Apply(ctx, &env.Env); err != nil || !res.Changed {
		t.Fatalf("first Apply = %+v, %v", res, err)
	}
	for _, run := range []func(context.Context, *Env) (Result, error){c.Check, c.Apply} {
		res, err := run(ctx, &env.Env)
		if err != nil || res.Changed || res.Ran || res.SkippedReason != "creates: "+marker+" exists" {
			t.Errorf("after creating the marker: %+v, %v; want skipped", res, err)
		}
	}

	rm := newCommand(t, &agentv1.CommandModule{Argv: []string{"rm", env.Path(marker)}, Removes: marker})
	if res, err := rm.Apply(ctx, &env.Env); err != nil || !res.Changed {
		t.Fatalf("removes Apply = %+v, %v", res, err)
	}
	res, err = rm.Apply(ctx, &env.Env)
	if err != nil || res.Changed || res.SkippedReason != "removes: "+marker+" does not exist" {
		t.Errorf("second removes Apply = %+v, %v; want skipped", res, err)
	}
}

func TestCommandTimeoutKillsProcessGroup(t *testing.T) {
	env := newRecorder(t, "")
	pidFile := env.Path("/pid")
	c := newCommand(t, &agentv1.CommandModule{
		// The background sleep keeps stdout open; only killing the whole
		// group ends it.
		Argv:           []string{"sh", "-c", `sleep 60 & echo $! > "$1"; wait`, "sh", pidFile},
		TimeoutSeconds: 1,
	})
	start := time.Now()
	res, err := c.Apply(context.Background(), &env.Env)
	if err == nil || !strings.Contains(err.Error(), "timed out after 1s") {
		t.Fatalf("Apply = %+v, %v; want a timeout", res, err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Apply took %s after a 1s timeout", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(2 * time.Second)
	for {
		// Once killed and reaped by init, /proc/<pid> goes away; a zombie
		// still shows, with state Z.
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background sleep %s still alive after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCommandCancel(t *testing.T) {
	env := newRecorder(t, "")
	c := newCommand(t, &agentv1.CommandModule{Argv: []string{"sleep", "60"}})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Apply(ctx, &env.Env); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply: err = %v, want the context's error", err)
	}
}

func TestCommandNotFound(t *testing.T) {
	env := newRecorder(t, "")
	c := newCommand(t, &agentv1.CommandModule{Argv: []string{"kthw-no-such-command"}})
	res, err := c.Apply(context.Background(), &env.Env)
	if !errors.Is(err, exec.ErrNotFound) || res.Ran {
		t.Fatalf("Apply = %+v, %v; want not found", res, err)
	}
}

func TestCommandHugeOutput(t *testing.T) {
	env := newRecorder(t, "")
	// 10 MB on one line, then a short one: must neither deadlock nor make
	// a line bigger than MaxLineSize.
	c := newCommand(t, &agentv1.CommandModule{
		Argv: []string{"sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' a; echo; echo end"},
	})
	if _, err := c.Apply(context.Background(), &env.Env); err != nil {
		t.Fatal(err)
	}
	lines := env.stream(agentv1.LogLine_STREAM_STDOUT)
	total := 0
	for _, l := range lines[:len(lines)-1] {
		if len(l) > MaxLineSize {
			t.Fatalf("line of %d bytes", len(l))
		}
		total += len(l)
	}
	if total != 10000000 || lines[len(lines)-1] != "end" {
		t.Errorf("got %d bytes in %d lines, last %q", total, len(lines), lines[len(lines)-1])
	}
}

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"split writes", []string{"a", "b\nc", "\n"}, []string{"ab", "c"}},
		{"no final newline", []string{"x\ny"}, []string{"x", "y"}},
		{"crlf", []string{"dos\r\n"}, []string{"dos"}},
		{"empty lines", []string{"\n\n"}, []string{"", ""}},
		{"invalid utf-8", []string{"a\xffb\n"}, []string{"a\uFFFDb"}},
		{"long line", []string{strings.Repeat("x", MaxLineSize+10) + "\n"},
			[]string{strings.Repeat("x", MaxLineSize), strings.Repeat("x", 10)}},
		{"long line in pieces", []string{strings.Repeat("x", MaxLineSize-1), "yz\n"},
			[]string{strings.Repeat("x", MaxLineSize-1) + "y", "z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			w := &lineWriter{emit: func(s string) { got = append(got, s) }}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.flush()
			if !slices.Equal(got, tt.want) {
				t.Errorf("lines = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	got := quote([]string{"sh", "-c", "echo hi", ""})
	if want := `sh -c "echo hi" ""`; got != want {
		t.Errorf("quote = %s, want %s", got, want)
	}
}
