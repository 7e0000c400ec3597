// Package secret resolves the secret references of a cluster file. A cluster
// file never holds a secret; it names where one is:
//
//	env:NAME        the environment variable NAME
//	sops:FILE#KEY   the top-level KEY of the SOPS-encrypted FILE
//
// Resolved values are returned to the caller only: this package never logs,
// prints or stores them, and its errors never repeat them.
//
// sops: references are decrypted by the sops program (github.com/getsops/sops)
// found in $PATH: linking SOPS' decrypt package in would pull every key
// service SDK it supports (AWS, GCP, Azure, Vault) into the controller and
// quadruple its size.
package secret

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ErrNotSet is returned for an env: reference to an unset or empty variable.
var ErrNotSet = errors.New("secret not set")

// Resolver resolves references. The zero value uses the process environment
// and the sops program in $PATH.
type Resolver struct {
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// Sops runs "sops --decrypt --extract PATH FILE" and returns its
	// standard output (default: the sops program in $PATH).
	Sops func(ctx context.Context, file, extract string) ([]byte, error)
}

// Resolve returns the secret ref points to, with surrounding white space
// (a trailing newline of a file or a shell) removed.
func (r Resolver) Resolve(ctx context.Context, ref string) (string, error) {
	scheme, rest, _ := strings.Cut(ref, ":")
	switch scheme {
	case "env":
		getenv := r.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		if rest == "" {
			return "", errors.New("secret reference env: names no variable")
		}
		v := strings.TrimSpace(getenv(rest))
		if v == "" {
			return "", fmt.Errorf("%w: environment variable %s is empty or unset", ErrNotSet, rest)
		}
		return v, nil
	case "sops":
		file, key, ok := strings.Cut(rest, "#")
		if !ok || file == "" || key == "" {
			return "", errors.New("secret reference sops: needs a file and a key, like sops:secrets.yaml#proxmox_token")
		}
		run := r.Sops
		if run == nil {
			run = runSops
		}
		out, err := run(ctx, file, extractPath(key))
		if err != nil {
			return "", fmt.Errorf("decrypt %s key %s: %w", file, key, err)
		}
		v := strings.TrimSpace(string(out))
		if v == "" {
			return "", fmt.Errorf("%w: key %s of %s is empty", ErrNotSet, key, file)
		}
		return v, nil
	}
	return "", errors.New("not a secret reference: want env:NAME or sops:FILE#KEY")
}

// extractPath is sops' --extract syntax for a top-level key: ["key"].
func extractPath(key string) string {
	return `["` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"]`
}

// runSops decrypts with the sops program. Its standard error (which holds no
// plaintext) is kept for the error message; standard output, the secret, only
// goes back to the caller.
func runSops(ctx context.Context, file, extract string) ([]byte, error) {
	bin, err := exec.LookPath("sops")
	if err != nil {
		return nil, errors.New("sops references need the sops program (https://github.com/getsops/sops) in $PATH; install it or use env:NAME")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--decrypt", "--extract", extract, file)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			return nil, fmt.Errorf("sops: %w", err)
		}
		return nil, fmt.Errorf("sops: %w: %s", err, msg)
	}
	return stdout.Bytes(), nil
}
