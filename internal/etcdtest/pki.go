// Package etcdtest runs real etcd for tests: a kubeadm-style etcd PKI
// (CA, server, peer, healthcheck-client and apiserver-etcd-client
// certificates under <root>/etc/kubernetes/pki, the paths kubeadm writes)
// and an in-process etcd (go.etcd.io/etcd/server/v3/embed) that serves
// TLS with client-certificate authentication, as kubeadm's stacked etcd
// does. The agent and the controller tests share it; it is never linked
// into a binary.
package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a kubeadm-style etcd PKI written under a root directory.
type PKI struct {
	// Dir is <root>/etc/kubernetes/pki.
	Dir string
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

// Paths of the files kubeadm writes, relative to the PKI directory.
const (
	CACert                  = "etcd/ca.crt"
	CAKey                   = "etcd/ca.key"
	ServerCert              = "etcd/server.crt"
	ServerKey               = "etcd/server.key"
	PeerCert                = "etcd/peer.crt"
	PeerKey                 = "etcd/peer.key"
	HealthcheckClientCert   = "etcd/healthcheck-client.crt"
	HealthcheckClientKey    = "etcd/healthcheck-client.key"
	APIServerEtcdClientCert = "apiserver-etcd-client.crt"
	APIServerEtcdClientKey  = "apiserver-etcd-client.key"
)

// NewPKI writes a CA and the certificates kubeadm makes for a stacked etcd
// member named name under root/etc/kubernetes/pki. The server and peer
// certificates are valid for localhost, 127.0.0.1, ::1, name and ips, like
// kubeadm's (which adds the node's advertise address).
func NewPKI(root, name string, ips ...net.IP) (*PKI, error) {
	dir := filepath.Join(root, "etc/kubernetes/pki")
	if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcd-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, ca: ca, key: key}
	if err := p.write(CACert, CAKey, der, key); err != nil {
		return nil, err
	}
	hosts := append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...)
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, c := range []struct {
		cert, key, cn string
		usage         []x509.ExtKeyUsage
		dns           []string
		ips           []net.IP
	}{
		{ServerCert, ServerKey, name, both, []string{name, "localhost"}, hosts},
		{PeerCert, PeerKey, name, both, []string{name, "localhost"}, hosts},
		{HealthcheckClientCert, HealthcheckClientKey, "kube-etcd-healthcheck-client", client, nil, nil},
		{APIServerEtcdClientCert, APIServerEtcdClientKey, "kube-apiserver-etcd-client", client, nil, nil},
	} {
		if err := p.Issue(c.cert, c.key, c.cn, c.usage, c.dns, c.ips); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Issue writes a certificate signed by the PKI's CA and its key to the
// files cert and key (relative to the PKI directory).
func (p *PKI) Issue(cert, key, cn string, usage []x509.ExtKeyUsage, dns []string, ips []net.IP) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.key)
	if err != nil {
		return err
	}
	return p.write(cert, key, der, k)
}

// Path returns the absolute path of a PKI file such as CACert.
func (p *PKI) Path(rel string) string { return filepath.Join(p.Dir, rel) }

func (p *PKI) write(cert, key string, der []byte, k *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.Path(cert), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", cert, err)
	}
	if err := os.WriteFile(p.Path(key), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}
