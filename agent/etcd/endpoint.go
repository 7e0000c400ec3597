package etcd

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// DefaultDialTimeout bounds connecting and every call but the snapshot
// stream.
const DefaultDialTimeout = 5 * time.Second

// Endpoint is how to reach one etcd member: its client URL and the files of
// the client certificate kubeadm made for talking to it.
type Endpoint struct {
	// URL is the member's client URL; default DefaultEndpoint.
	URL string
	// CACert, Cert and Key are PEM files. Empty means kubeadm's:
	// <pki>/ca.crt and <pki>/healthcheck-client.crt/.key (the client
	// certificate kubeadm's own etcd client uses), or
	// <pki>/server.crt/.key when the healthcheck client's are missing.
	CACert, Cert, Key string
	// DialTimeout bounds connecting and each call but the snapshot stream;
	// default DefaultDialTimeout.
	DialTimeout time.Duration
	// Root prefixes the certificate paths (tests); "" means /.
	Root string
}

// FromProto returns the endpoint m describes, on a node whose paths are
// prefixed by root.
func FromProto(m *agentv1.EtcdEndpoint, root string) Endpoint {
	return Endpoint{
		URL:         m.GetUrl(),
		CACert:      m.GetCaCert(),
		Cert:        m.GetCert(),
		Key:         m.GetKey(),
		DialTimeout: time.Duration(m.GetDialTimeoutSeconds()) * time.Second,
		Root:        root,
	}
}

// WithDefaults returns e with every empty field set to its default.
func (e Endpoint) WithDefaults() Endpoint {
	if e.URL == "" {
		e.URL = DefaultEndpoint
	}
	if e.DialTimeout <= 0 {
		e.DialTimeout = DefaultDialTimeout
	}
	if e.CACert == "" {
		e.CACert = filepath.Join(DefaultPKIDir, "ca.crt")
	}
	if e.Cert == "" && e.Key == "" {
		e.Cert = filepath.Join(DefaultPKIDir, "healthcheck-client.crt")
		e.Key = filepath.Join(DefaultPKIDir, "healthcheck-client.key")
		if _, err := os.Stat(e.path(e.Cert)); errors.Is(err, fs.ErrNotExist) {
			e.Cert = filepath.Join(DefaultPKIDir, "server.crt")
			e.Key = filepath.Join(DefaultPKIDir, "server.key")
		}
	}
	return e
}

// path returns p under Root.
func (e Endpoint) path(p string) string {
	if e.Root == "" || p == "" {
		return p
	}
	return filepath.Join(e.Root, p)
}
