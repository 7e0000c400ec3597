//go:build !linux

package push

import "os"

// fileIdentity is Linux-only; elsewhere the local agent's hash is not stamped.
func fileIdentity(string, os.FileInfo) string { return "" }
