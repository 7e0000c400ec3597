package pkg

import (
	"errors"
	"strconv"
	"strings"
)

// ErrNotFound marks a package or version the repositories do not offer.
var ErrNotFound = errors.New("not found")

// ErrUnsupported marks something a backend cannot do (e.g. an install root
// on apt) or a package manager kthw has no backend for.
var ErrUnsupported = errors.New("not supported")

// ExitError is a command that ran and exited non-zero (or was killed).
// Runners return it; backends wrap it with what they were doing.
type ExitError struct {
	Argv []string
	// Code is the exit code; 128+signal when a signal killed the command.
	Code int
	// Stderr is the tail of what the command wrote on stderr (its last
	// lines, trimmed).
	Stderr string
}

func (e *ExitError) Error() string {
	name := "command"
	if len(e.Argv) > 0 {
		name = e.Argv[0]
	}
	msg := name + " exited " + strconv.Itoa(e.Code)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + strings.ReplaceAll(s, "\n", "; ")
	}
	return msg
}
