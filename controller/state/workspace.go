package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// EnvWorkspace is the environment variable that names the workspace
// directory when no --workspace flag is given.
const EnvWorkspace = "KTHW_WORKSPACE"

// RootWorkspaces is the parent of per-cluster workspaces when running as
// root.
const RootWorkspaces = "/var/lib/kthw/workspaces"

// WorkspaceEnv is what ResolveWorkspace reads from the process: the CLI
// fills it with its injected environment, tests by hand.
type WorkspaceEnv struct {
	// Getenv looks up an environment variable.
	Getenv func(key string) string
	// Root reports whether the process runs as root (effective uid 0).
	Root bool
}

// ResolveWorkspace returns the absolute workspace directory of a cluster, the
// first of:
//
//  1. flagValue (the --workspace flag), if not empty;
//  2. $KTHW_WORKSPACE, if set;
//  3. as root, /var/lib/kthw/workspaces/<clusterName>;
//  4. $XDG_DATA_HOME/kthw/workspaces/<clusterName> if $XDG_DATA_HOME is an
//     absolute path, else ~/.local/share/kthw/workspaces/<clusterName>.
//
// clusterName is needed, and must be a single path element, only for 3
// and 4.
func ResolveWorkspace(flagValue, clusterName string, env WorkspaceEnv) (string, error) {
	getenv := env.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	dir := flagValue
	if dir == "" {
		dir = getenv(EnvWorkspace)
	}
	if dir == "" {
		if clusterName == "" || clusterName == "." || clusterName == ".." || strings.ContainsAny(clusterName, `/\`) {
			return "", fmt.Errorf("resolve workspace: cluster name %q is not a directory name", clusterName)
		}
		parent, err := workspacesDir(getenv, env.Root)
		if err != nil {
			return "", fmt.Errorf("resolve workspace: %w", err)
		}
		dir = filepath.Join(parent, clusterName)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve workspace: %w", err)
	}
	return abs, nil
}

func workspacesDir(getenv func(string) string, root bool) (string, error) {
	if root {
		return RootWorkspaces, nil
	}
	if x := getenv("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "kthw", "workspaces"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("$HOME is not set; give --workspace or $" + EnvWorkspace)
	}
	return filepath.Join(home, ".local", "share", "kthw", "workspaces"), nil
}
