package etcdtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Member is a running in-process etcd member.
type Member struct {
	Name string
	// ClientURL is https://127.0.0.1:<port>; PeerURL http://127.0.0.1:<port>.
	ClientURL, PeerURL string
	// DataDir is the member's data directory.
	DataDir string
	PKI     *PKI
	etcd    *embed.Etcd
	// tmp is the temporary directory StartMember made for DataDir; Stop removes it.
	tmp string
}

// Options configure Start.
type Options struct {
	// Name of the member; default "node-1".
	Name string
	// DataDir to use; default a new temporary directory, removed by Stop. A
	// restored data directory starts the member from it.
	DataDir string
	// PeerURL to advertise; default a free loopback port. A member started
	// on a restored data directory should use the peer URL it was
	// restored with.
	PeerURL string
	// QuotaBackendBytes raises etcd's 2 GiB default when set.
	QuotaBackendBytes int64
}

// Start runs an etcd member that serves https with client-certificate
// authentication using p's server certificate, and stops it when the test
// ends.
func Start(t testing.TB, p *PKI, o Options) *Member {
	t.Helper()
	m, err := StartMember(p, o)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(m.Stop)
	return m
}

// StartMember is Start for programs that are not tests; the caller stops
// the member.
func StartMember(p *PKI, o Options) (_ *Member, err error) {
	if o.Name == "" {
		o.Name = "node-1"
	}
	tmp := ""
	if o.DataDir == "" {
		if tmp, err = os.MkdirTemp("", "etcdtest-"); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				os.RemoveAll(tmp)
			}
		}()
		o.DataDir = filepath.Join(tmp, "data")
	}
	cport, err := FreePort()
	if err != nil {
		return nil, err
	}
	if o.PeerURL == "" {
		pport, err := FreePort()
		if err != nil {
			return nil, err
		}
		o.PeerURL = "http://127.0.0.1:" + strconv.Itoa(pport)
	}
	curl, _ := url.Parse("https://127.0.0.1:" + strconv.Itoa(cport))
	purl, err := url.Parse(o.PeerURL)
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.DataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*curl}, []url.URL{*curl}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*purl}, []url.URL{*purl}
	cfg.InitialCluster = o.Name + "=" + o.PeerURL
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       p.Path(ServerCert),
		KeyFile:        p.Path(ServerKey),
		TrustedCAFile:  p.Path(CACert),
		ClientCertAuth: true,
	}
	// etcd logs errors while it shuts down; ETCDTEST_LOG=1 shows its log.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if os.Getenv("ETCDTEST_LOG") != "" {
		cfg.ZapLoggerBuilder = nil
		cfg.LogLevel = "info"
	}
	cfg.QuotaBackendBytes = o.QuotaBackendBytes
	cfg.MaxRequestBytes = 8 << 20
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd not ready within 60s")
	}
	return &Member{Name: o.Name, ClientURL: curl.String(), PeerURL: o.PeerURL, DataDir: o.DataDir, PKI: p, etcd: e, tmp: tmp}, nil
}

// Stop stops the member and removes the data directory StartMember made
// (one given in Options stays); it is safe to call twice.
func (m *Member) Stop() {
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
	if m.tmp != "" {
		os.RemoveAll(m.tmp)
		m.tmp = ""
	}
}

// Client returns a client of the member that authenticates with the
// healthcheck-client certificate. The caller closes it.
func (m *Member) Client() (*clientv3.Client, error) {
	tc, err := m.PKI.ClientTLS(HealthcheckClientCert, HealthcheckClientKey)
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// MustClient is Client for tests; the client is closed when the test ends.
func (m *Member) MustClient(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := m.Client()
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ClientTLS returns a TLS client configuration that trusts the PKI's CA
// and presents the given certificate.
func (p *PKI) ClientTLS(cert, key string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(p.Path(cert), p.Path(key))
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(p.Path(CACert))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Fill writes n keys prefix0000..., each with a value of size bytes, in
// transactions of at most batch bytes. It returns the revision after the
// last write.
func Fill(ctx context.Context, c *clientv3.Client, prefix string, n, size int) (int64, error) {
	val := make([]byte, size)
	var rev int64
	// Below the client's 2 MiB send limit and etcd's default 1.5 MiB request limit.
	const batch = 1 << 20
	per := max(1, min(128, batch/max(size, 1)))
	for i := 0; i < n; i += per {
		var ops []clientv3.Op
		for j := i; j < min(n, i+per); j++ {
			// Random values (seeded per key): nothing compresses away.
			var seed [32]byte
			binary.LittleEndian.PutUint64(seed[:], uint64(j))
			rand.NewChaCha8(seed).Read(val)
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%06d", prefix, j), string(val)))
		}
		resp, err := c.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("fill: %w", err)
		}
		rev = resp.Header.Revision
	}
	return rev, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
