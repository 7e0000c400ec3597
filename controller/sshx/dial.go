package sshx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// DefaultConnectTimeout bounds the TCP connect plus the SSH handshake when
// Options.ConnectTimeout is zero.
const DefaultConnectTimeout = 20 * time.Second

// Options says how to authenticate, how to verify host keys and how to reach a target.
type Options struct {
	// IdentityFiles are unencrypted private keys (an encrypted one works only if ssh-agent
	// holds the same key and UseAgent is set).
	IdentityFiles []string
	// UseAgent adds the keys of the ssh-agent at $SSH_AUTH_SOCK.
	UseAgent bool
	// KnownHostsFile is the known_hosts file to verify host keys against (required; it may
	// not exist yet).
	KnownHostsFile string
	// AcceptNew appends the key of a host that has no entry yet (trust on first use). A
	// changed key is never accepted.
	AcceptNew bool
	// Jump, when set, is a host to tunnel through (like ssh -J). It is verified against the
	// same known_hosts file and authenticated with the same keys.
	Jump *Target
	// ConnectTimeout bounds TCP connect plus handshake, per hop (DefaultConnectTimeout if 0).
	ConnectTimeout time.Duration
	// KeepAlive, when positive, sends keepalive@openssh.com requests at this interval and
	// closes the client after three unanswered intervals.
	KeepAlive time.Duration
}

// Dial connects and authenticates to t. The host key is verified strictly against
// o.KnownHostsFile (see Options.AcceptNew). ctx bounds the dial and handshake only; cancel
// it later and the client stays up. Closing the client also closes the jump connection.
//
// Errors read "dial USER@HOST:PORT: ..." and, for the common cases, wrap ErrHostKeyUnknown,
// ErrHostKeyChanged, ErrAuthFailed or a syscall error such as syscall.ECONNREFUSED.
func Dial(ctx context.Context, t Target, o Options) (*ssh.Client, error) {
	t = t.withDefaults()
	c, err := dial(ctx, t, o)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", t, err)
	}
	return c, nil
}

func dial(ctx context.Context, t Target, o Options) (*ssh.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	hk, err := loadHostKeys(o.KnownHostsFile, o.AcceptNew)
	if err != nil {
		return nil, err
	}
	a, err := loadAuth(o)
	if err != nil {
		return nil, err
	}
	defer a.close() // the agent is needed for the handshake only

	addr := t.Addr()
	var (
		conn net.Conn
		jump *ssh.Client
	)
	if o.Jump != nil {
		jt := o.Jump.withDefaults()
		jo := o
		jo.Jump = nil
		jump, err = dial(ctx, jt, jo)
		if err != nil {
			return nil, fmt.Errorf("via jump host %s: %w", jt, err)
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		conn, err = jump.DialContext(cctx, "tcp", addr)
		cancel()
		if err != nil {
			jump.Close()
			return nil, fmt.Errorf("via jump host %s: open tunnel: %w", jt, explainNetErr(err, timeout))
		}
		conn = &tunnelConn{Conn: conn, raddr: tunnelAddr(addr)}
	} else {
		d := net.Dialer{Timeout: timeout}
		conn, err = d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, explainNetErr(err, timeout)
		}
		conn = quickAck(conn)
	}

	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(a.signers...)},
		HostKeyCallback:   hk.callback,
		HostKeyAlgorithms: hk.algorithms(addr),
		Timeout:           timeout,
	}
	client, err := handshake(ctx, conn, addr, cfg, timeout)
	if err != nil {
		conn.Close()
		if jump != nil {
			jump.Close()
		}
		return nil, explainHandshakeErr(err, t, hk, a)
	}
	if jump != nil {
		go func() {
			client.Wait()
			jump.Close()
		}()
	}
	if o.KeepAlive > 0 {
		go keepAlive(client, o.KeepAlive)
	}
	return client, nil
}

// errHandshakeTimeout is returned when the handshake outlives the connect timeout.
var errHandshakeTimeout = errors.New("handshake timed out")

// handshake runs the SSH handshake on conn, aborting it when ctx ends or timeout passes
// (closing the conn is the only interrupt that works for both TCP and tunnel conns).
func handshake(ctx context.Context, conn net.Conn, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout)) // best effort; tunnel conns ignore it
	done := make(chan struct{})
	aborted := make(chan error, 1)
	go func() {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-done:
			aborted <- nil
		case <-ctx.Done():
			conn.Close()
			aborted <- ctx.Err()
		case <-timer.C:
			conn.Close()
			aborted <- errHandshakeTimeout
		}
	}()
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	close(done)
	if why := <-aborted; why != nil {
		if err == nil {
			c.Close()
		}
		return nil, why
	}
	if err != nil {
		if isTimeout(err) {
			return nil, errHandshakeTimeout
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// explainNetErr turns connect failures into one clear line that still wraps the cause.
func explainNetErr(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, syscall.ECONNREFUSED):
		return explained("connection refused (is sshd running and listening on that port?)", syscall.ECONNREFUSED)
	case errors.Is(err, syscall.EHOSTUNREACH):
		return explained("host unreachable (no route to host)", syscall.EHOSTUNREACH)
	case errors.Is(err, syscall.ENETUNREACH):
		return explained("network unreachable", syscall.ENETUNREACH)
	case isTimeout(err):
		return explained(fmt.Sprintf("connection timed out after %s (host down or a firewall dropping packets?)", timeout), os.ErrDeadlineExceeded)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("resolve host %s: %w", dnsErr.Name, err)
	}
	// "administratively prohibited" etc. from a jump host, or anything else.
	return err
}

// explainHandshakeErr replaces x/crypto's "ssh: handshake failed: ..." with one clear line.
func explainHandshakeErr(err error, t Target, hk *hostKeys, a *auth) error {
	if v := hk.verdict(); v != nil {
		return v
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, errHandshakeTimeout):
		return explained("ssh handshake timed out (the port is open but no SSH server answered in time)", os.ErrDeadlineExceeded)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unable to authenticate"):
		return &AuthError{User: t.User, Keys: a.descs}
	case strings.Contains(msg, "no common algorithm for host key"):
		addr := t.Addr()
		if known := hk.known(addr); len(known) > 0 {
			return &HostKeyError{
				Host:         knownhosts.Normalize(addr),
				File:         hk.file,
				Known:        known,
				OfferedTypes: serverOffered(msg),
			}
		}
	case errors.Is(err, syscall.ECONNRESET), strings.Contains(msg, "EOF"):
		return fmt.Errorf("connection closed by the server during the ssh handshake (not an SSH server, or it refused us: check its log): %w", err)
	}
	return err
}

// serverOffered extracts the server's list from x/crypto's negotiation error
// (`...; we offered: ["a"], peer offered: ["b" "c"]`; older versions say "server offered").
func serverOffered(msg string) []string {
	var rest string
	var ok bool
	for _, label := range []string{"peer offered: [", "server offered: ["} {
		if _, rest, ok = strings.Cut(msg, label); ok {
			break
		}
	}
	if !ok {
		return nil
	}
	list, _, _ := strings.Cut(rest, "]")
	var algos []string
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ' ' || r == ',' }) {
		if a, err := strconv.Unquote(f); err == nil {
			f = a
		}
		algos = append(algos, f)
	}
	return algos
}

// keepAlive pings the server every interval and closes the client when three intervals pass
// without an answer.
func keepAlive(c *ssh.Client, every time.Duration) {
	closed := make(chan struct{})
	go func() {
		c.Wait()
		close(closed)
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return
		case <-tick.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case <-closed:
			return
		case err := <-reply:
			if err != nil {
				c.Close()
				return
			}
		case <-time.After(3 * every):
			c.Close()
			return
		}
	}
}

// explainedError is a one-line message standing in for a cause that errors.Is still finds.
type explainedError struct {
	msg   string
	cause error
}

func explained(msg string, cause error) error { return &explainedError{msg, cause} }

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.cause }

// tunnelConn gives a jump-host tunnel the target's address (x/crypto leaves it zero), so
// errors and RemoteAddr() name the real target.
type tunnelConn struct {
	net.Conn
	raddr net.Addr
}

func (c *tunnelConn) RemoteAddr() net.Addr { return c.raddr }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "tcp" }
func (a tunnelAddr) String() string  { return string(a) }
