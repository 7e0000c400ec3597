package sshx

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// ErrAuthFailed classifies authentication failures (use errors.Is).
var ErrAuthFailed = errors.New("authentication failed")

// AuthError reports that the server accepted none of the offered keys.
type AuthError struct {
	User string
	Keys []string // "FILE (TYPE SHA256:...)" or "agent: TYPE SHA256:... COMMENT"
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("authentication failed for user %s with key(s) %s", e.User, strings.Join(e.Keys, ", "))
}

// Is makes errors.Is(err, ErrAuthFailed) work.
func (e *AuthError) Is(target error) bool { return target == ErrAuthFailed }

// auth holds the signers for one dial and the agent connection they may need.
type auth struct {
	signers []ssh.Signer
	descs   []string
	agent   net.Conn
}

func (a *auth) close() {
	if a.agent != nil {
		a.agent.Close()
	}
}

// loadAuth loads the identity files and, when asked, the ssh-agent's keys. An encrypted
// identity file is an error unless the agent holds the same key.
func loadAuth(o Options) (*auth, error) {
	a := &auth{}
	var agentSigners []ssh.Signer
	if o.UseAgent {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return nil, fmt.Errorf("connect to ssh-agent (SSH_AUTH_SOCK=%s): %w", sock, err)
			}
			a.agent = conn
			agentSigners, err = agent.NewClient(conn).Signers()
			if err != nil {
				a.close()
				return nil, fmt.Errorf("list ssh-agent keys: %w", err)
			}
		} else if len(o.IdentityFiles) == 0 {
			return nil, errors.New("no identity: SSH_AUTH_SOCK is not set and no identity file was given")
		}
	}
	seen := map[string]bool{}
	add := func(s ssh.Signer, desc string) {
		fp := ssh.FingerprintSHA256(s.PublicKey())
		if seen[fp] {
			return
		}
		seen[fp] = true
		a.signers = append(a.signers, s)
		a.descs = append(a.descs, desc)
	}
	for _, file := range o.IdentityFiles {
		s, err := loadIdentity(file, agentSigners)
		if err != nil {
			a.close()
			return nil, err
		}
		add(s, fmt.Sprintf("%s (%s)", file, describeKey(s.PublicKey())))
	}
	for _, s := range agentSigners {
		add(s, "agent: "+describeKey(s.PublicKey()))
	}
	if len(a.signers) == 0 {
		a.close()
		if o.UseAgent && a.agent != nil {
			return nil, errors.New("no identity: ssh-agent holds no keys and no identity file was given")
		}
		return nil, errors.New("no identity: give an identity file or use ssh-agent")
	}
	return a, nil
}

func loadIdentity(file string, agentSigners []ssh.Signer) (ssh.Signer, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read identity file: %w", err)
	}
	s, err := ssh.ParsePrivateKey(pem)
	var pm *ssh.PassphraseMissingError
	if errors.As(err, &pm) {
		if pm.PublicKey != nil {
			want := pm.PublicKey.Marshal()
			for _, as := range agentSigners {
				if string(as.PublicKey().Marshal()) == string(want) {
					return as, nil
				}
			}
		}
		return nil, fmt.Errorf("identity file %s is encrypted with a passphrase and kthw cannot prompt for it: load it into ssh-agent (ssh-add %s) or use an unencrypted key", file, file)
	}
	if err != nil {
		return nil, fmt.Errorf("parse identity file %s: %w", file, err)
	}
	return s, nil
}
