// Package pkg holds the package-manager backends (apt, dnf, zypper) the
// agent's package modules use. Each backend runs the real tools through a
// Runner and parses their output; nothing is guessed from exit codes alone.
package pkg

import (
	"context"
	"io"
	"time"
)

// Package is a package name with an optional version in the manager's own
// format ("1.31.2-1.1" for apt, "1.31.2-150500.1.1" for rpm). An empty
// version means any.
type Package struct {
	Name    string
	Version string
}

// Repo is a package repository and the key that signs it.
type Repo struct {
	// Name identifies the repository; it names its files.
	Name        string
	Description string
	// URI is the base URI (apt) or baseurl (rpm).
	URI string
	// Suite and Components are apt's; a flat repository has Suite "/".
	Suite      string
	Components []string
	// Key is the ASCII-armored OpenPGP public key.
	Key []byte
}

// File is a file a backend wants on the node (a repository definition or
// its key); the caller writes it atomically and reports the diff.
type File struct {
	Path    string
	Content []byte
	Mode    uint32
}

// Manager is one package manager on one node.
type Manager interface {
	// Name is apt, dnf or zypper.
	Name() string
	// Refresh updates the package index unless it is younger than maxAge;
	// it reports whether it refreshed.
	Refresh(ctx context.Context, maxAge time.Duration) (bool, error)
	// Installed returns the installed version of each named package that
	// is installed; missing packages are absent from the map.
	Installed(ctx context.Context, names []string) (map[string]string, error)
	// Resolve turns a wanted version ("1.31.2", "v1.31.2", "1.31.2-1.1",
	// "" for the newest) into the exact version the repositories offer.
	// An unknown package or version is an error wrapping ErrNotFound.
	Resolve(ctx context.Context, name, want string) (string, error)
	// Install installs the packages at exactly the given versions,
	// allowing downgrades and changes of held packages it was asked for.
	Install(ctx context.Context, pkgs []Package) error
	// Remove removes the named packages.
	Remove(ctx context.Context, names []string) error
	// Held returns which of the named packages are held/locked.
	Held(ctx context.Context, names []string) (map[string]bool, error)
	// Hold holds (apt-mark hold, zypper addlock, dnf versionlock) or
	// releases the named packages.
	Hold(ctx context.Context, names []string, hold bool) error
	// RepoFiles renders the files that define repo on this manager.
	RepoFiles(repo Repo) ([]File, error)
	// RepoPaths lists the files RepoFiles would write for a repository
	// named name (to remove it).
	RepoPaths(name string) []string
}

// Runner runs commands for the backends: the agent runs them for real,
// unit tests record them.
type Runner interface {
	// Run runs argv with env added to a minimal environment and stdin
	// (nil: /dev/null). A non-zero exit is a *ExitError carrying stderr.
	Run(ctx context.Context, argv []string, env []string, stdin io.Reader) (stdout []byte, err error)
}
