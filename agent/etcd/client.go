package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tlsConfig loads the endpoint's CA and client certificate. An http://
// endpoint gets none.
func (e Endpoint) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q is not an http(s) URL like %s", e.URL, DefaultEndpoint)
	}
	if u.Scheme == "http" {
		return nil, nil
	}
	pem, err := os.ReadFile(e.path(e.CACert))
	if err != nil {
		return nil, fmt.Errorf("%w: read CA certificate: %w", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: no PEM certificate in %s", ErrTLS, e.CACert)
	}
	pair, err := tls.LoadX509KeyPair(e.path(e.Cert), e.path(e.Key))
	if err != nil {
		return nil, fmt.Errorf("%w: load client certificate %s and key %s: %w", ErrTLS, e.Cert, e.Key, err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// connect returns a client of exactly one endpoint (a snapshot must come
// from one selected member) after a Status call proved that the member
// answers; it returns that status too.
func (e Endpoint) connect(ctx context.Context) (*clientv3.Client, *clientv3.StatusResponse, error) {
	e = e.WithDefaults()
	tc, err := e.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	// The client waits for a connection until its deadline and then only
	// says "deadline exceeded"; one probe of our own says why.
	if err := e.probe(ctx, tc); err != nil {
		return nil, nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.URL},
		TLS:         tc,
		DialTimeout: e.DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, nil, e.explain(err)
	}
	sctx, cancel := context.WithTimeout(ctx, e.DialTimeout)
	defer cancel()
	st, err := cli.Status(sctx, e.URL)
	if err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, e.explain(err)
	}
	return cli, st, nil
}

// http2Preface is what an HTTP/2 client sends first: the connection preface
// and an empty SETTINGS frame. etcd's listener waits for a client's first
// bytes before it answers at all.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// probe connects to the endpoint, shakes hands and reads the server's first
// bytes, so that a refused connection, an untrusted server certificate or
// a refused client certificate is reported as such, at once.
func (e Endpoint) probe(ctx context.Context, tc *tls.Config) error {
	u, _ := url.Parse(e.URL)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "2379")
	}
	ctx, cancel := context.WithTimeout(ctx, e.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ctx.Err()
		}
		return fmt.Errorf("%w: connect to etcd at %s (is etcd running and the endpoint right?): %w", ErrUnreachable, e.URL, err)
	}
	defer conn.Close()
	if tc == nil {
		return nil
	}
	cfg := tc.Clone()
	cfg.ServerName = u.Hostname()
	cfg.NextProtos = []string{"h2"}
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(ctx); err != nil {
		var uerr x509.UnknownAuthorityError
		var herr x509.HostnameError
		switch {
		case errors.As(err, &uerr):
			return fmt.Errorf("%w: etcd's server certificate at %s is not signed by the CA in %s: %w", ErrTLS, e.URL, e.CACert, err)
		case errors.As(err, &herr):
			return fmt.Errorf("%w: etcd's server certificate is not valid for %s: %w", ErrTLS, u.Hostname(), err)
		case isRemoteTLSAlert(err):
			return fmt.Errorf("%w: etcd at %s refused the client certificate %s: %w", ErrTLS, e.URL, e.Cert, err)
		}
		return fmt.Errorf("%w: TLS handshake with etcd at %s: %w", ErrTLS, e.URL, err)
	}
	// With TLS 1.3 the server judges the client certificate after the
	// client's handshake is done; its verdict arrives with the first read.
	if deadline, ok := ctx.Deadline(); ok {
		tconn.SetDeadline(deadline)
	}
	if _, err := io.WriteString(tconn, http2Preface); err != nil {
		return fmt.Errorf("%w: etcd at %s: %w", ErrUnreachable, e.URL, err)
	}
	var b [1]byte
	if _, err := tconn.Read(b[:]); err != nil {
		if isRemoteTLSAlert(err) {
			return fmt.Errorf("%w: etcd at %s refused the client certificate %s (is it signed by etcd's CA?): %w", ErrTLS, e.URL, e.Cert, err)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // no verdict; the client will tell
		}
		return fmt.Errorf("%w: etcd at %s closed the connection: %w", ErrUnreachable, e.URL, err)
	}
	return nil
}

// isRemoteTLSAlert reports whether err is an alert the server sent.
func isRemoteTLSAlert(err error) bool {
	var alert tls.AlertError
	return errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:")
}

// explain turns a gRPC or dial error into one that says what is wrong,
// wrapping ErrTLS or ErrUnreachable.
func (e Endpoint) explain(err error) error {
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Message()
		if s.Code() != codes.Unavailable && s.Code() != codes.DeadlineExceeded {
			return fmt.Errorf("etcd at %s: %w", e.URL, err)
		}
	}
	switch {
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:") || strings.Contains(msg, "authentication handshake failed"):
		hint := "check the CA (--cacert " + e.CACert + ")"
		if strings.Contains(msg, "remote error") || strings.Contains(msg, "certificate required") {
			hint = "etcd refused the client certificate " + e.Cert
		}
		return fmt.Errorf("%w: handshake with etcd at %s failed (%s): %s", ErrTLS, e.URL, hint, msg)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "no such host") || strings.Contains(msg, "connection error"):
		return fmt.Errorf("%w: no answer from etcd at %s within %s (is etcd running and the endpoint right?): %s", ErrUnreachable, e.URL, e.DialTimeout, msg)
	}
	return fmt.Errorf("etcd at %s: %w", e.URL, err)
}
