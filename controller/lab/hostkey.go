package lab

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// GenerateHostKey makes an ed25519 SSH host key for a node: the private key as OpenSSH PEM (for
// NodeSpec.HostKey) and its public key, to pin in known_hosts before the first connection.
func GenerateHostKey() ([]byte, ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, fmt.Errorf("generate host key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("generate host key: %w", err)
	}
	return pem.EncodeToMemory(block), sshPub, nil
}

// hostPublicKey parses an ed25519 private key PEM and returns its public key.
func hostPublicKey(pemBytes []byte) (ssh.PublicKey, error) {
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("parse host key: %w", err)
	}
	if t := signer.PublicKey().Type(); t != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("parse host key: type %s, want %s", t, ssh.KeyAlgoED25519)
	}
	return signer.PublicKey(), nil
}
