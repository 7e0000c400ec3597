// Package module is the agent's module runtime: the Module interface every
// typed module implements, the Env a module runs in, and the Registry that
// maps a RunModuleRequest to the module that carries it out.
//
// A module is idempotent. Check reports what Apply would change and changes
// nothing; Apply makes the change and reports whether there was one. Both
// stream log lines and progress through the Env while they work.
package module

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Errors a module returns for a request it cannot carry out at all. The
// server turns them into gRPC status codes; any other error is a module that
// ran and failed, and ends up in the result.
var (
	// ErrInvalid marks a malformed request (InvalidArgument).
	ErrInvalid = errors.New("invalid module request")
	// ErrUnsupported marks a module this agent does not link in (Unimplemented).
	ErrUnsupported = errors.New("module not supported by this agent")
	// ErrBlobMissing marks a reference to a blob that is not in the blob
	// store (FailedPrecondition): the controller must upload it first.
	ErrBlobMissing = errors.New("blob not uploaded")
)

// Module is one typed, idempotent unit of work on the node.
type Module interface {
	// Check reports what Apply would change, changing nothing.
	Check(ctx context.Context, env *Env) (Result, error)
	// Apply makes the change, if any, and reports it.
	Apply(ctx context.Context, env *Env) (Result, error)
}

// Result is what a module reports when it is done. A module that ran and
// failed returns its Result together with a non-nil error.
type Result struct {
	// Changed tells whether Apply changed (or Check would change) anything.
	Changed bool
	// Diff describes the change for a human: a unified diff for files.
	Diff string
	// SkippedReason tells why the module did nothing, e.g. a creates guard.
	SkippedReason string
	// Ran is true when a command ran; ExitCode is then its exit code.
	Ran      bool
	ExitCode int
	// Output is what the module made, for modules that make something: a
	// message of ModuleResult's output oneof (EtcdSnapshotManifest).
	Output proto.Message
}

// Env is what a module may use of the agent. The server builds one per
// request.
type Env struct {
	// Root prefixes every path a module reads or writes; "" means /. Tests
	// point it at a temporary directory.
	Root string
	// Log receives the module's log lines. It must be safe for concurrent use.
	Log func(stream agentv1.LogLine_Stream, text string)
	// Progress receives progress of long operations. It must be safe for
	// concurrent use.
	Progress func(done, total int64, unit string)
	// Blob returns the path of a stored blob, or an error wrapping
	// ErrBlobMissing.
	Blob func(sha256 string) (string, error)
	// Logger is the agent's own log.
	Logger *slog.Logger
	// Runner runs the helper commands of modules (package managers,
	// sysctl, modprobe, ...): stdin /dev/null, output streamed to Log.
	Runner pkg.Runner
	// Packages returns the node's package manager: name "" detects it
	// (apt, dnf, zypper), otherwise that backend.
	Packages func(ctx context.Context, name string) (pkg.Manager, error)
}

// Path returns p (an absolute node path) under Root.
func (e *Env) Path(p string) string {
	if e.Root == "" {
		return p
	}
	return filepath.Join(e.Root, p)
}

func (e *Env) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

func (e *Env) info(text string) { e.log(agentv1.LogLine_STREAM_INFO, text) }

func (e *Env) log(stream agentv1.LogLine_Stream, text string) {
	if e.Log != nil {
		e.Log(stream, text)
	}
}

func (e *Env) progress(done, total int64, unit string) {
	if e.Progress != nil {
		e.Progress(done, total, unit)
	}
}

func (e *Env) blob(sha string) (string, error) {
	if e.Blob == nil {
		return "", fmt.Errorf("find blob %s: %w", sha, ErrBlobMissing)
	}
	return e.Blob(sha)
}
