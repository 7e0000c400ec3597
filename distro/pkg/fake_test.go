package pkg

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// call is one command a backend ran, and what the fake answered.
type call struct {
	argv   []string
	env    []string
	stdout string
	err    error
}

// fakeRunner records commands and answers them from a script: each
// expectation is the argv it wants and the answer it gives. Commands run
// in the scripted order; anything else fails the test.
type fakeRunner struct {
	t *testing.T

	mu     sync.Mutex
	script []call
	calls  []call
}

func newFake(t *testing.T, script ...call) *fakeRunner {
	t.Helper()
	f := &fakeRunner{t: t, script: script}
	t.Cleanup(func() {
		if len(f.script) > 0 {
			t.Errorf("commands expected but not run: %q", f.script[0].argv)
		}
	})
	return f
}

func (f *fakeRunner) Run(ctx context.Context, argv, env []string, stdin io.Reader) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{argv: argv, env: env})
	if len(f.script) == 0 {
		f.t.Errorf("unexpected command %q", argv)
		return nil, fmt.Errorf("unexpected command")
	}
	want := f.script[0]
	f.script = f.script[1:]
	if !slices.Equal(argv, want.argv) {
		f.t.Errorf("command:\n got %q\nwant %q", argv, want.argv)
	}
	return []byte(want.stdout), want.err
}

// expect returns a scripted call.
func expect(stdout string, err error, argv ...string) call {
	return call{argv: argv, stdout: stdout, err: err}
}

// output returns a captured real output from testdata/outputs.
func output(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "outputs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// golden compares got with testdata/<test name>.golden, rewriting it with
// -update.
func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", t.Name()+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the rendered output (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func testKey(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "test-key.asc"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newManager(t *testing.T, name string, r Runner, opts Options) Manager {
	t.Helper()
	m, err := New(name, r, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	return m
}

func errContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("err = %q, want it to contain %q", err, p)
		}
	}
}
