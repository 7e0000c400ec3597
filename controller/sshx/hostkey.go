package sshx

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// ErrHostKeyUnknown and ErrHostKeyChanged classify a *HostKeyError (use errors.Is).
var (
	ErrHostKeyUnknown = errors.New("host key unknown")
	ErrHostKeyChanged = errors.New("host key changed")
)

// HostKeyError reports a host key that known_hosts does not vouch for.
type HostKeyError struct {
	Host    string // as written in known_hosts: "10.0.0.5" or "[127.0.0.1]:2222"
	File    string // the known_hosts file consulted
	Offered ssh.PublicKey
	// Known lists the keys known_hosts holds for Host; empty when the host is unknown.
	Known []knownhosts.KnownKey
	// OfferedTypes is set instead of Offered when the server had no key of a known type.
	OfferedTypes []string
}

func (e *HostKeyError) Error() string {
	if len(e.Known) == 0 {
		return fmt.Sprintf("host key for %s is not known (server offered %s): verify it and add it to %s, or pass --accept-new to trust it on first use",
			e.Host, describeKey(e.Offered), e.File)
	}
	known := make([]string, 0, len(e.Known))
	lines := make([]string, 0, len(e.Known))
	for _, k := range e.Known {
		known = append(known, describeKey(k.Key))
		lines = append(lines, fmt.Sprintf("%s:%d", k.Filename, k.Line))
	}
	offered := describeKey(e.Offered)
	if e.Offered == nil {
		offered = "only key types " + strings.Join(e.OfferedTypes, ",")
	}
	what := "line"
	if len(lines) > 1 {
		what = "lines"
	}
	return fmt.Sprintf("host key for %s changed: known_hosts has %s, server offered %s; possible man-in-the-middle; remove the old %s (%s) if the change is expected",
		e.Host, strings.Join(known, ", "), offered, what, strings.Join(lines, ", "))
}

// Is makes errors.Is(err, ErrHostKeyUnknown) and errors.Is(err, ErrHostKeyChanged) work.
func (e *HostKeyError) Is(target error) bool {
	switch target {
	case ErrHostKeyUnknown:
		return len(e.Known) == 0
	case ErrHostKeyChanged:
		return len(e.Known) > 0
	}
	return false
}

func describeKey(k ssh.PublicKey) string {
	if k == nil {
		return "no key"
	}
	return k.Type() + " " + ssh.FingerprintSHA256(k)
}

// hostKeys verifies host keys for one dial against a known_hosts file.
type hostKeys struct {
	file      string
	acceptNew bool
	db        ssh.HostKeyCallback
	hasCA     bool // the file has @cert-authority lines

	mu  sync.Mutex
	err error // the last verdict, returned instead of x/crypto's wrapped one
}

func loadHostKeys(file string, acceptNew bool) (*hostKeys, error) {
	if file == "" {
		return nil, errors.New("no known_hosts file configured")
	}
	h := &hostKeys{file: file, acceptNew: acceptNew}
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		h.db, err = knownhosts.New() // empty: every host is unknown
	case err != nil:
		return nil, fmt.Errorf("read known_hosts: %w", err)
	default:
		h.hasCA = bytes.Contains(data, []byte("@cert-authority"))
		h.db, err = knownhosts.New(file)
	}
	if err != nil {
		return nil, fmt.Errorf("load known_hosts: %w", err)
	}
	return h, nil
}

// throwaway is a key that is in no known_hosts file; checking it yields the known keys.
var throwaway = sync.OnceValue(func() ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
})

// known returns the keys known_hosts holds for addr ("host:port").
func (h *hostKeys) known(addr string) []knownhosts.KnownKey {
	err := h.db(addr, &net.TCPAddr{IP: net.IPv4zero}, throwaway())
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return ke.Want
	}
	return nil
}

// algorithms returns the host key algorithms to offer for addr: only those matching the
// known keys (in x/crypto's preference order), or nil (x/crypto's defaults) for unknown hosts.
func (h *hostKeys) algorithms(addr string) []string {
	known := h.known(addr)
	if len(known) == 0 {
		return nil
	}
	var algos []string
	for _, k := range known {
		for _, a := range algorithmsForKeyType(k.Key.Type()) {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	if h.hasCA {
		for _, a := range certAlgorithms {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	return algos
}

var certAlgorithms = []string{
	ssh.CertAlgoED25519v01,
	ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
	ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01,
}

// algorithmsForKeyType maps a public key type to the signature algorithms a server may use
// to prove it owns such a key.
func algorithmsForKeyType(typ string) []string {
	switch typ {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	case ssh.CertAlgoRSAv01:
		return []string{ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01, ssh.CertAlgoRSAv01}
	default:
		return []string{typ}
	}
}

// callback is the ssh.HostKeyCallback for one connection.
func (h *hostKeys) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := h.verify(hostname, remote, key)
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
	return err
}

func (h *hostKeys) verify(hostname string, remote net.Addr, key ssh.PublicKey) error {
	err := h.db(hostname, remote, key)
	if err == nil {
		return nil
	}
	host := knownhosts.Normalize(hostname)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		if len(ke.Want) > 0 || !h.acceptNew {
			return &HostKeyError{Host: host, File: h.file, Offered: key, Known: ke.Want}
		}
		if err := appendKnownHost(h.file, host, key); err != nil {
			return fmt.Errorf("accept new host key for %s: %w", host, err)
		}
		return nil
	}
	var re *knownhosts.RevokedError
	if errors.As(err, &re) {
		return fmt.Errorf("host key for %s (%s) is revoked in %s:%d", host, describeKey(key), re.Revoked.Filename, re.Revoked.Line)
	}
	return fmt.Errorf("verify host key for %s: %w", host, err)
}

// verdict returns the error of the last host key check, if any.
func (h *hostKeys) verdict() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// knownHostsMu serializes appends so parallel dials cannot interleave or duplicate lines.
var knownHostsMu sync.Mutex

// appendKnownHost appends "host key" to file (created 0600, parent 0700) unless a line for
// this host and key appeared meanwhile.
func appendKnownHost(file, host string, key ssh.PublicKey) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	existing, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	line := knownhosts.Line([]string{host}, key)
	sc := bufio.NewScanner(bytes.NewReader(existing))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == line {
			return nil
		}
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if len(existing) > 0 && existing[len(existing)-1] != '\n' {
		line = "\n" + line
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
