package sshx

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultKeepAlive is the keepalive interval DefaultOptions sets.
const DefaultKeepAlive = 30 * time.Second

// DefaultIdentityNames are the keys in ~/.ssh that DefaultOptions looks for, in order.
var DefaultIdentityNames = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// DefaultOptions fills what the user left empty, the way ssh does, reading the environment
// through getenv (os.Getenv in production):
//
//   - UseAgent when $SSH_AUTH_SOCK is set;
//   - IdentityFiles, when none were given: those of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that
//     exist and are not encrypted (an encrypted key is usable through the agent only);
//   - KnownHostsFile: ~/.ssh/known_hosts;
//   - KeepAlive: DefaultKeepAlive.
//
// It fails when there is no way to authenticate at all, or no home directory to look in.
func DefaultOptions(o *Options, getenv func(string) string) error {
	if getenv("SSH_AUTH_SOCK") != "" {
		o.UseAgent = true
	}
	home := getenv("HOME")
	if o.KnownHostsFile == "" {
		if home == "" {
			return errors.New("no known_hosts file: $HOME is not set; pass --known-hosts")
		}
		o.KnownHostsFile = filepath.Join(home, ".ssh", "known_hosts")
	}
	if len(o.IdentityFiles) == 0 && home != "" {
		for _, name := range DefaultIdentityNames {
			p := filepath.Join(home, ".ssh", name)
			data, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			if _, err := ssh.ParseRawPrivateKey(data); err == nil {
				o.IdentityFiles = append(o.IdentityFiles, p)
			}
		}
	}
	if len(o.IdentityFiles) == 0 && !o.UseAgent {
		return errors.New("no SSH identity: pass --identity, load a key into ssh-agent, or create ~/.ssh/id_ed25519")
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	return nil
}
