package sshdtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// The test users. Every server authorizes its client key for all of them (and root).
const (
	// UserSudo has NOPASSWD sudo and /bin/bash as its shell.
	UserSudo = "kthwt-sudo"
	// UserPassword has sudo that asks for a password (an undisclosed random one), so
	// "sudo -n" fails.
	UserPassword = "kthwt-pw"
	// UserNoisy has NOPASSWD sudo and a login shell that prints junk (some of it binary) to
	// stdout before exec'ing /bin/bash, like a chatty .bashrc or motd.
	UserNoisy = "kthwt-noisy"
)

// Users lists the test users, without root.
var Users = []string{UserSudo, UserPassword, UserNoisy}

// NoisyJunk is what UserNoisy's shell prints to stdout before every command.
const NoisyJunk = "Welcome to kthw-noisy!\n" +
	"Last login: never\n" +
	"\x00\x01\x02\xff\xfe binary junk \x1b[31mred\x1b[0m\n" +
	"sha256: 0000000000000000000000000000000000000000000000000000000000000000\n" +
	"no newline at the end"

const (
	sudoersFile = "/etc/sudoers.d/kthwt"
	shellDir    = "/usr/local/libexec/kthwt-sshdtest"
	noisyShell  = shellDir + "/noisy-shell"
	lockFile    = "/run/lock/kthw-sshdtest.lock"
)

// System-wide test users are shared by every test binary on the machine (go test runs
// packages in parallel), so their lifetime is managed at two levels:
//
//   - across processes, by a flock on lockFile: a process creates/repairs the users while
//     holding it exclusively and then holds it shared for as long as it uses them; a
//     process that is done removes the users only if it can take the lock exclusively
//     without waiting, that is, when no other process still uses them. Flock downgrades are
//     not atomic, so after taking the shared lock a process re-checks that the users exist
//     and starts over if a leaver removed them in between.
//   - within a process, by a reference count: each Start takes a reference, its cleanup
//     drops it; Main pins the users for the whole test binary so they are created once.
//
// Creation is idempotent and repairs leftovers of a crashed run (shells, password fields,
// the sudoers file are rewritten every time).
var users struct {
	mu     sync.Mutex
	refs   int
	pinned bool
	lock   *os.File // holds the shared lock while this process uses the users
}

func acquireUsers() error {
	users.mu.Lock()
	defer users.mu.Unlock()
	if users.lock == nil {
		f, err := lockShared()
		if err != nil {
			return err
		}
		users.lock = f
	}
	users.refs++
	return nil
}

func releaseUsers() {
	users.mu.Lock()
	defer users.mu.Unlock()
	users.refs--
	if users.refs == 0 && !users.pinned {
		leave()
	}
}

// leave gives up this process's use of the users, removing them if nobody else uses them.
// users.mu must be held.
func leave() {
	f := users.lock
	if f == nil {
		return
	}
	users.lock = nil
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		removeUsers()
	}
}

func lockShared() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for range 10 {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockFile, err)
		}
		if err := ensureUsers(); err != nil {
			f.Close()
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockFile, err)
		}
		if usersPresent() {
			return f, nil
		}
	}
	f.Close()
	return nil, errors.New("test users keep disappearing (another process removing them?)")
}

func usersPresent() bool {
	for _, u := range Users {
		if _, err := user.Lookup(u); err != nil {
			return false
		}
	}
	for _, p := range []string{sudoersFile, noisyShell} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

func run(name string, args ...string) error {
	return runIn("", name, args...)
}

func runIn(stdin, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func ensureUsers() error {
	if err := os.MkdirAll(shellDir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(shellDir, 0o755); err != nil {
		return err
	}
	script := "#!/bin/sh\nprintf '" + printfEscape(NoisyJunk) + "'\nexec /bin/bash \"$@\"\n"
	if err := writeFileAtomic(noisyShell, []byte(script), 0o755); err != nil {
		return err
	}
	shells := map[string]string{UserSudo: "/bin/bash", UserPassword: "/bin/bash", UserNoisy: noisyShell}
	for _, u := range Users {
		if _, err := user.Lookup(u); err != nil {
			if err := run("useradd", "--create-home", "--shell", shells[u], u); err != nil {
				return err
			}
		} else if err := run("usermod", "--shell", shells[u], u); err != nil {
			return err
		}
	}
	// sshd without PAM refuses locked accounts ("!" in the password field).
	for _, u := range []string{UserSudo, UserNoisy} {
		if err := run("usermod", "-p", "*", u); err != nil {
			return err
		}
	}
	pw := make([]byte, 18)
	if _, err := rand.Read(pw); err != nil {
		return err
	}
	if err := runIn(UserPassword+":"+hex.EncodeToString(pw)+"\n", "chpasswd"); err != nil {
		return err
	}
	sudoers := "# kthw sshdtest users; removed when the tests finish\n" +
		UserSudo + " ALL=(ALL) NOPASSWD: ALL\n" +
		UserNoisy + " ALL=(ALL) NOPASSWD: ALL\n" +
		UserPassword + " ALL=(ALL) ALL\n"
	// A name with a dot is ignored by sudo's includedir until the rename.
	tmp := sudoersFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(sudoers), 0o440); err != nil {
		return err
	}
	if err := run("visudo", "-c", "-q", "-f", tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, sudoersFile)
}

func removeUsers() {
	for _, u := range Users {
		if _, err := user.Lookup(u); err == nil {
			_ = run("userdel", "--force", "--remove", u)
		}
	}
	os.Remove(sudoersFile)
	os.RemoveAll(shellDir)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// printfEscape writes s as a printf format for a single-quoted shell word: printable ASCII
// as is, everything else (and quote, backslash, percent) as octal escapes.
func printfEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '\'' && c != '\\' && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "\\%03o", c)
	}
	return b.String()
}
