package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// User is a login user of a node besides root, made the way cloud-init makes its default user:
// a home directory, a locked password (key logins only), its keys in ~/.ssh/authorized_keys
// and, with Sudo, passwordless sudo through /etc/sudoers.d. Start writes users on every start:
// an existing user keeps its UID and gets the spec's keys.
type User struct {
	// Name is the login name: a-z, 0-9, '_', '-', starting with a letter or '_', at most 32
	// bytes; not root (root's keys are NodeSpec.AuthorizedKeys).
	Name string
	// AuthorizedKeys is written to ~/.ssh/authorized_keys.
	AuthorizedKeys []byte
	// Sudo grants "ALL=(ALL) NOPASSWD:ALL". The image must have sudo (the default recipe
	// installs it).
	Sudo bool
}

var userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// validateUsers checks NodeSpec.Users.
func validateUsers(users []User) []string {
	var msgs []string
	seen := map[string]bool{}
	for i, u := range users {
		switch {
		case !userNameRE.MatchString(u.Name):
			msgs = append(msgs, fmt.Sprintf("users[%d]: %q is not a valid user name", i, u.Name))
		case u.Name == "root":
			msgs = append(msgs, fmt.Sprintf("users[%d]: root is not an extra user (its keys are authorizedKeys)", i))
		case seen[u.Name]:
			msgs = append(msgs, fmt.Sprintf("users[%d]: %s given twice", i, u.Name))
		}
		seen[u.Name] = true
		if len(bytes.TrimSpace(u.AuthorizedKeys)) == 0 {
			msgs = append(msgs, fmt.Sprintf("users[%d]: authorizedKeys empty", i))
		} else if _, _, _, _, err := ssh.ParseAuthorizedKey(u.AuthorizedKeys); err != nil {
			msgs = append(msgs, fmt.Sprintf("users[%d]: authorizedKeys: %v", i, err))
		}
	}
	return msgs
}

// sudoersFile holds the sudo rules of NodeSpec.Users (cloud-init writes
// /etc/sudoers.d/90-cloud-init-users).
const sudoersFile = "/etc/sudoers.d/90-kthw-users"

// Account database entries of a new user, as useradd writes them: the password locked, no
// aging limits.
const (
	firstUID = 1000
	lastUID  = 59999
)

// writeUsers creates or updates users in the tree at root: /etc/passwd, /etc/group,
// /etc/shadow and /etc/gshadow entries (a user group of the same ID), the home directory with
// ~/.ssh/authorized_keys owned by the user, and the sudo rules. Paths resolve inside the tree
// only.
func writeUsers(root string, users []User) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("write users: %w", err)
	}
	defer r.Close()
	db := map[string][]string{}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} {
		data, err := r.ReadFile(f)
		if err != nil && !(errors.Is(err, fs.ErrNotExist) && f == "etc/gshadow") {
			return fmt.Errorf("write users: %w", err)
		}
		db[f] = lines(data)
	}
	changed := map[string]bool{}
	var sudoers strings.Builder
	for _, u := range users {
		uid, gid, ok := lookupUser(db["etc/passwd"], u.Name)
		if !ok {
			uid = freeID(db["etc/passwd"], db["etc/group"])
			if uid < 0 {
				return fmt.Errorf("write users: no free UID in %d..%d for %s", firstUID, lastUID, u.Name)
			}
			gid = uid
			home := "/home/" + u.Name
			add := map[string]string{
				"etc/passwd":  fmt.Sprintf("%s:x:%d:%d::%s:/bin/bash", u.Name, uid, gid, home),
				"etc/group":   fmt.Sprintf("%s:x:%d:", u.Name, gid),
				"etc/shadow":  u.Name + ":!:19000:0:99999:7:::",
				"etc/gshadow": u.Name + ":!::",
			}
			for f, line := range add {
				if !hasEntry(db[f], u.Name) {
					db[f] = append(db[f], line)
					changed[f] = true
				}
			}
		}
		home := "home/" + u.Name
		for _, d := range []string{home, home + "/.ssh"} {
			if err := r.MkdirAll(d, 0o700); err != nil {
				return fmt.Errorf("write users: %w", err)
			}
			if err := r.Chmod(d, 0o700); err != nil {
				return fmt.Errorf("write users: %w", err)
			}
			if err := r.Lchown(d, uid, gid); err != nil {
				return fmt.Errorf("write users: %w", err)
			}
		}
		keys := string(u.AuthorizedKeys)
		if !strings.HasSuffix(keys, "\n") {
			keys += "\n"
		}
		ak := home + "/.ssh/authorized_keys"
		if err := r.Remove(ak); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write users: %w", err)
		}
		if err := r.WriteFile(ak, []byte(keys), 0o600); err != nil {
			return fmt.Errorf("write users: %w", err)
		}
		if err := r.Lchown(ak, uid, gid); err != nil {
			return fmt.Errorf("write users: %w", err)
		}
		if u.Sudo {
			fmt.Fprintf(&sudoers, "%s ALL=(ALL) NOPASSWD:ALL\n", u.Name)
		}
	}
	for _, f := range []string{"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"} {
		if !changed[f] {
			continue
		}
		// WriteFile on the existing file keeps its mode and owner (shadow: root:shadow 0640).
		if err := r.WriteFile(f, []byte(strings.Join(db[f], "\n")+"\n"), 0o600); err != nil {
			return fmt.Errorf("write users: %w", err)
		}
	}
	name := strings.TrimPrefix(sudoersFile, "/")
	if sudoers.Len() == 0 {
		if err := r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("write users: %w", err)
		}
		return nil
	}
	if _, err := r.Stat("usr/bin/sudo"); err != nil {
		return fmt.Errorf("write users: the node image has no sudo (/usr/bin/sudo): add it to the recipe's include list")
	}
	if err := r.MkdirAll(path.Dir(name), 0o755); err != nil {
		return fmt.Errorf("write users: %w", err)
	}
	if err := r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write users: %w", err)
	}
	data := "# Written by kthw: the node's users, as cloud-init grants its default user.\n" + sudoers.String()
	if err := r.WriteFile(name, []byte(data), 0o440); err != nil {
		return fmt.Errorf("write users: %w", err)
	}
	if err := r.Chmod(name, 0o440); err != nil {
		return fmt.Errorf("write users: %w", err)
	}
	return nil
}

func lines(data []byte) []string {
	s := strings.TrimRight(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func hasEntry(db []string, name string) bool {
	for _, l := range db {
		if strings.HasPrefix(l, name+":") {
			return true
		}
	}
	return false
}

// lookupUser finds name's UID and GID in passwd lines.
func lookupUser(passwd []string, name string) (uid, gid int, ok bool) {
	for _, l := range passwd {
		f := strings.Split(l, ":")
		if len(f) < 4 || f[0] != name {
			continue
		}
		u, err1 := strconv.Atoi(f[2])
		g, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			return u, g, true
		}
	}
	return 0, 0, false
}

// freeID is the lowest ID from firstUID on that is neither a UID nor a GID; -1 when none is.
func freeID(passwd, group []string) int {
	used := map[int]bool{}
	for _, db := range [][]string{passwd, group} {
		for _, l := range db {
			f := strings.Split(l, ":")
			if len(f) >= 3 {
				if n, err := strconv.Atoi(f[2]); err == nil {
					used[n] = true
				}
			}
		}
	}
	for id := firstUID; id <= lastUID; id++ {
		if !used[id] {
			return id
		}
	}
	return -1
}
