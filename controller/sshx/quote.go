package sshx

import "strings"

// Quote quotes s for a POSIX shell: unchanged if it holds only safe characters, otherwise
// inside single quotes, each embedded single quote closed, backslash-escaped and reopened.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !isSafe(r) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isSafe(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("@%_-+=:,./", r)
}

// Command joins args into one shell command line, quoting each: the form to hand to Run, as
// the server passes it to the login shell's -c.
func Command(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
