package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveWorkspace(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	env := func(root bool, kv ...string) WorkspaceEnv {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return WorkspaceEnv{Getenv: func(k string) string { return m[k] }, Root: root}
	}
	tests := []struct {
		name    string
		flag    string
		cluster string
		env     WorkspaceEnv
		want    string
		wantErr string
	}{
		{"flag wins", "/srv/ws", "lab", env(true, "KTHW_WORKSPACE", "/env/ws", "HOME", "/home/u"), "/srv/ws", ""},
		{"relative flag made absolute", "ws/lab", "lab", env(false), filepath.Join(cwd, "ws/lab"), ""},
		{"environment", "", "lab", env(false, "KTHW_WORKSPACE", "/env/ws", "HOME", "/home/u"), "/env/ws", ""},
		{"environment needs no cluster name", "", "", env(false, "KTHW_WORKSPACE", "/env/ws"), "/env/ws", ""},
		{"root", "", "lab", env(true, "HOME", "/root"), "/var/lib/kthw/workspaces/lab", ""},
		{"user", "", "lab", env(false, "HOME", "/home/u"), "/home/u/.local/share/kthw/workspaces/lab", ""},
		{"XDG_DATA_HOME", "", "lab", env(false, "HOME", "/home/u", "XDG_DATA_HOME", "/data"), "/data/kthw/workspaces/lab", ""},
		{"relative XDG_DATA_HOME ignored", "", "lab", env(false, "HOME", "/home/u", "XDG_DATA_HOME", "data"), "/home/u/.local/share/kthw/workspaces/lab", ""},
		{"no HOME", "", "lab", env(false), "", "$HOME is not set"},
		{"no cluster name", "", "", env(false, "HOME", "/home/u"), "", "not a directory name"},
		{"cluster name with slash", "", "../x", env(false, "HOME", "/home/u"), "", "not a directory name"},
		{"nil Getenv", "", "lab", WorkspaceEnv{Root: true}, "/var/lib/kthw/workspaces/lab", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveWorkspace(tt.flag, tt.cluster, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "resolve workspace: ") {
					t.Fatalf("ResolveWorkspace() = %q, %v; want error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ResolveWorkspace() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
