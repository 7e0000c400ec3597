// Package node connects the controller to one node's agent: SSH dial with
// verified host keys, agent push (only when its hash differs), agent start
// over the SSH session, gRPC handshake.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kthw/kthw/controller/push"
	"github.com/kthw/kthw/controller/session"
	"github.com/kthw/kthw/controller/sshx"
)

// DefaultBlobDir is where agents keep uploaded blobs.
const DefaultBlobDir = "/var/lib/kthw/blobs"

// Options configure Connect.
type Options struct {
	SSH sshx.Options
	// AgentBinary is the local kthw-agent to push.
	AgentBinary string
	// AgentDir is the node's root-owned agent directory (push.DefaultDir when empty).
	AgentDir string
	// BlobDir is where the agent stores blobs (DefaultBlobDir when empty).
	BlobDir string
	// ControllerVersion is reported to the agent in the handshake.
	ControllerVersion string
	// AgentLogLevel is passed to the agent (info when empty).
	AgentLogLevel string
	Logger        *slog.Logger
}

// Conn is a live connection to one node's agent.
type Conn struct {
	Target sshx.Target
	SSH    *ssh.Client
	Push   push.Result
	*session.Session
	// Timing of the steps, for reports and benchmarks.
	DialTime, PushTime, StartTime time.Duration
}

// Connect dials t, pushes the agent when needed and starts it.
func Connect(ctx context.Context, t sshx.Target, o Options) (*Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{Target: t}
	start := time.Now()
	client, err := sshx.Dial(ctx, t, o.SSH)
	if err != nil {
		return nil, err
	}
	c.SSH = client
	c.DialTime = time.Since(start)

	start = time.Now()
	res, err := push.Pusher{Dir: o.AgentDir}.Push(ctx, client, t.User, o.AgentBinary)
	if err != nil {
		client.Close()
		return nil, err
	}
	c.Push = res
	c.PushTime = time.Since(start)
	log.DebugContext(ctx, "agent pushed", "node", t.String(), "uploaded", res.Uploaded, "bytes", res.Bytes)

	start = time.Now()
	sess, err := session.Start(ctx, client, agentCommand(t.User, res.RemotePath, o), session.Options{
		Name:              t.Host,
		ControllerVersion: o.ControllerVersion,
	})
	if err != nil {
		client.Close()
		var exit *session.ExitError
		if errors.As(err, &exit) && sshx.IsSudoPasswordRequired(exit.Stderr) {
			return nil, fmt.Errorf("start agent: %s: %w", sshx.SudoPasswordMessage(t.String(), t.User), sshx.ErrSudoPassword)
		}
		return nil, fmt.Errorf("start agent on %s: %w", t, err)
	}
	c.Session = sess
	c.StartTime = time.Since(start)
	if sess.Handshake.GetBinarySha256() != res.SHA256 {
		c.Close()
		return nil, fmt.Errorf("start agent on %s: running agent has sha256 %s, pushed %s", t, sess.Handshake.GetBinarySha256(), res.SHA256)
	}
	return c, nil
}

func agentCommand(user, remotePath string, o Options) string {
	blobDir := o.BlobDir
	if blobDir == "" {
		blobDir = DefaultBlobDir
	}
	level := o.AgentLogLevel
	if level == "" {
		level = "info"
	}
	return sshx.SudoPrefix(user) + sshx.Quote(remotePath) + " serve --stdio --log-level " + sshx.Quote(level) +
		" --blob-dir " + sshx.Quote(path.Clean(blobDir))
}

// Close ends the agent session and the SSH connection.
func (c *Conn) Close() error {
	if c.Session != nil {
		c.Session.Close()
	}
	return c.SSH.Close()
}
