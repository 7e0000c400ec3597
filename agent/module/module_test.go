package module

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// recorder is an Env whose events are kept for the test to inspect.
type recorder struct {
	Env

	mu       sync.Mutex
	lines    []*agentv1.LogLine
	progress []*agentv1.Progress
}

// newRecorder returns an Env rooted in a fresh temporary directory, with
// blobs looked up in blobDir (none when blobDir is "").
func newRecorder(t *testing.T, blobDir string) *recorder {
	t.Helper()
	r := &recorder{}
	r.Root = t.TempDir()
	r.Log = func(stream agentv1.LogLine_Stream, text string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lines = append(r.lines, &agentv1.LogLine{Stream: stream, Text: text})
	}
	r.Progress = func(done, total int64, unit string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.progress = append(r.progress, &agentv1.Progress{Done: done, Total: total, Unit: unit})
	}
	r.Blob = func(sha string) (string, error) {
		p := filepath.Join(blobDir, sha)
		if _, err := os.Stat(p); blobDir == "" || err != nil {
			return "", fmt.Errorf("find blob %s: %w", sha, ErrBlobMissing)
		}
		return p, nil
	}
	return r
}

// stream returns the text of the lines logged on one stream.
func (r *recorder) stream(s agentv1.LogLine_Stream) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if l.Stream == s {
			out = append(out, l.Text)
		}
	}
	return out
}

// write creates a file under the recorder's root.
func (r *recorder) write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	full := r.Path(path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil {
		t.Fatal(err)
	}
}

func TestRegistry(t *testing.T) {
	r := Builtins()
	tests := []struct {
		name    string
		req     *agentv1.RunModuleRequest
		wantErr error
		want    any
	}{
		{"command", &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Command{
			Command: &agentv1.CommandModule{Argv: []string{"true"}}}}, nil, &Command{}},
		{"file", &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_File{
			File: &agentv1.FileModule{Path: "/etc/x"}}}, nil, &File{}},
		{"no module", &agentv1.RunModuleRequest{}, ErrInvalid, nil},
		{"invalid module", &agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Command{
			Command: &agentv1.CommandModule{}}}, ErrInvalid, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := r.New(tt.req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New: err = %v, want %v", err, tt.wantErr)
			}
			if tt.want != nil && fmt.Sprintf("%T", m) != fmt.Sprintf("%T", tt.want) {
				t.Errorf("New: got %T, want %T", m, tt.want)
			}
		})
	}
}

func TestRegistryUnsupported(t *testing.T) {
	r := NewRegistry()
	Register(r, func(m *agentv1.FileModule) (Module, error) { return NewFile(m) })
	_, err := r.New(&agentv1.RunModuleRequest{Module: &agentv1.RunModuleRequest_Command{
		Command: &agentv1.CommandModule{Argv: []string{"true"}}}})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "command") {
		t.Fatalf("New: err = %v, want ErrUnsupported naming the module", err)
	}
}
