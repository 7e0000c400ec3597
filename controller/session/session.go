// Package session starts kthw-agent over an SSH session and connects a gRPC
// client to it through yamux on the session's stdio.
//
// The agent prints a magic line before the multiplexed stream starts; what
// comes before it (a chatty shell profile, a motd) is read and discarded.
// Settings for yamux and gRPC mirror the agent's (docs/transport.md).
package session

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kthw/kthw/controller/sshx"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// maxNoise bounds what may precede the magic line.
const maxNoise = 1 << 20

// ErrAPIVersion is returned when the agent speaks another API version.
var ErrAPIVersion = errors.New("agent API version mismatch")

// Options tune Start.
type Options struct {
	// Name identifies the node in errors and in the gRPC target.
	Name string
	// ControllerVersion is sent in the handshake.
	ControllerVersion string
	// StartTimeout bounds the time until the magic line arrives.
	StartTimeout time.Duration
}

// Session is a running agent and a gRPC client connected to it.
type Session struct {
	Agent     agentv1.AgentServiceClient
	Handshake *agentv1.HandshakeResponse
	// Noise is what the remote shell printed before the agent started.
	Noise []byte

	name   string
	ssh    *ssh.Session
	stdin  io.WriteCloser
	mux    *yamux.Session
	conn   *grpc.ClientConn
	stderr *sshx.TailBuffer
	once   sync.Once
	// wait is the SSH session's Wait, which may be called once only.
	wait func() error
}

// Start runs command (the agent with `serve --stdio`, wrapped in sudo as
// needed) on client and returns a connected, handshaken session.
func Start(ctx context.Context, client *ssh.Client, command string, opts Options) (*Session, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	sess, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("open ssh session: %w", err)
	}
	s := &Session{name: opts.Name, ssh: sess, stderr: &sshx.TailBuffer{Max: 16 << 10}}
	s.wait = sync.OnceValue(sess.Wait)
	sess.Stderr = s.stderr
	stdin, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("open ssh stdin: %w", err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("open ssh stdout: %w", err)
	}
	s.stdin = stdin
	if err := sess.Start(command); err != nil {
		sess.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}

	br := bufio.NewReaderSize(stdout, 64<<10)
	noise, err := s.awaitMagic(ctx, br, opts.StartTimeout)
	s.Noise = noise
	if err != nil {
		s.Close()
		return nil, err
	}

	mux, err := yamux.Client(&stream{r: br, w: stdin}, agentv1.MuxConfig(nil))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("start yamux: %w", err)
	}
	s.mux = mux
	conn, err := grpc.NewClient("passthrough:///"+opts.Name,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return mux.Open() }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(agentv1.MaxMsgSize), grpc.MaxCallSendMsgSize(agentv1.MaxMsgSize)),
		grpc.WithInitialWindowSize(agentv1.StreamWindow),
		grpc.WithInitialConnWindowSize(agentv1.ConnWindow),
	)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("create grpc client: %w", err)
	}
	s.conn = conn
	s.Agent = agentv1.NewAgentServiceClient(conn)

	hctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	hs, err := s.Agent.Handshake(hctx, &agentv1.HandshakeRequest{ControllerVersion: opts.ControllerVersion, ApiVersion: agentv1.APIVersion})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("handshake: %w%s", err, s.stderrHint())
	}
	if hs.GetApiVersion() != agentv1.APIVersion {
		s.Close()
		return nil, fmt.Errorf("%w: agent %s speaks API %s, controller speaks %s", ErrAPIVersion, hs.GetAgentVersion(), hs.GetApiVersion(), agentv1.APIVersion)
	}
	s.Handshake = hs
	return s, nil
}

// awaitMagic discards lines until the agent's magic line and returns them.
func (s *Session) awaitMagic(ctx context.Context, br *bufio.Reader, timeout time.Duration) ([]byte, error) {
	type res struct {
		noise []byte
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		var noise []byte
		for {
			line, err := br.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				// A very long line of noise: keep reading it.
				noise = appendBounded(noise, line)
				if len(noise) >= maxNoise {
					ch <- res{noise, fmt.Errorf("no agent stream marker within %d bytes of output", maxNoise)}
					return
				}
				continue
			}
			if err != nil {
				ch <- res{noise, err}
				return
			}
			// Noise without a final newline runs into the magic line, so
			// the marker may start anywhere in the line.
			if i := bytes.Index(line, []byte(agentv1.StreamMagic+" ")); i >= 0 {
				ch <- res{appendBounded(noise, line[:i]), nil}
				return
			}
			noise = appendBounded(noise, line)
			if len(noise) >= maxNoise {
				ch <- res{noise, fmt.Errorf("no agent stream marker within %d bytes of output", maxNoise)}
				return
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err == nil {
			return r.noise, nil
		}
		if errors.Is(r.err, io.EOF) {
			return r.noise, s.exitError()
		}
		return r.noise, fmt.Errorf("wait for agent: %w%s", r.err, s.stderrHint())
	case <-t.C:
		return nil, fmt.Errorf("agent did not start within %s%s", timeout, s.stderrHint())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// exitError explains an agent that ended before its stream started.
func (s *Session) exitError() error {
	werr := s.wait()
	tail := strings.TrimSpace(s.stderr.String())
	var exit *ssh.ExitError
	if errors.As(werr, &exit) {
		if tail != "" {
			return &ExitError{Code: exit.ExitStatus(), Stderr: tail}
		}
		return &ExitError{Code: exit.ExitStatus()}
	}
	if tail != "" {
		return &ExitError{Code: -1, Stderr: tail}
	}
	return errors.New("agent exited before its stream started")
}

// ExitError is an agent that exited before its stream started.
type ExitError struct {
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("agent exited with status %d before its stream started", e.Code)
	}
	return fmt.Sprintf("agent exited with status %d before its stream started: %s", e.Code, lastLine(e.Stderr))
}

func (s *Session) stderrHint() string {
	if tail := strings.TrimSpace(s.stderr.String()); tail != "" {
		return " (agent stderr: " + lastLine(tail) + ")"
	}
	return ""
}

// Close ends the session: the agent sees stdin close and exits.
func (s *Session) Close() error {
	s.once.Do(func() {
		if s.conn != nil {
			s.conn.Close()
		}
		if s.mux != nil {
			s.mux.Close()
		}
		s.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- s.wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		s.ssh.Close()
	})
	return nil
}

// stream joins the buffered stdout reader and the stdin writer.
type stream struct {
	r io.Reader
	w io.WriteCloser
}

func (s *stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *stream) Close() error                { return s.w.Close() }

func appendBounded(dst, src []byte) []byte {
	if room := maxNoise - len(dst); len(src) > room {
		src = src[:room]
	}
	return append(dst, src...)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
