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
	// AgentHashStamp, when set, is a file that remembers AgentBinary's sha256 between runs
	// (see push.Locate).
	AgentHashStamp string
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

// Connect dials t, starts the agent, and pushes it first when the node does not have it (or
// has a copy whose hash, as the running agent reports it, is not the one pushed).
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

	res, err := push.Locate(o.AgentBinary, o.AgentDir, o.AgentHashStamp)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("push agent: %w", err)
	}
	pusher := push.Pusher{Dir: o.AgentDir}
	upload := func(why string) error {
		log.DebugContext(ctx, "uploading agent", "node", t.String(), "why", why)
		start := time.Now()
		r, err := pusher.Upload(ctx, client, t.User, o.AgentBinary)
		c.PushTime += time.Since(start)
		if err != nil {
			return err
		}
		res = r
		return nil
	}

	// The agent is started straight from its content-addressed path; only a node that does
	// not have it, or whose copy does not hash to its name, costs an upload.
	sess, err := c.start(ctx, client, res, o)
	var exit *session.ExitError
	switch {
	case err == nil && sess.Handshake.GetBinarySha256() != res.SHA256:
		log.WarnContext(ctx, "installed agent does not match its hash; uploading it again", "node", t.String(),
			"path", res.RemotePath, "running", sess.Handshake.GetBinarySha256())
		sess.Close()
		err = upload("hash mismatch")
	case errors.As(err, &exit) && (exit.Code == push.ExitNotInstalled || exit.Code == 126):
		// 126: the file is there but cannot be executed (damaged).
		err = upload(fmt.Sprintf("exit status %d", exit.Code))
	default:
		if err == nil {
			c.Session = sess
		}
	}
	if err == nil && c.Session == nil {
		sess, err = c.start(ctx, client, res, o)
		if err == nil && sess.Handshake.GetBinarySha256() != res.SHA256 {
			sess.Close()
			err = fmt.Errorf("start agent on %s: running agent has sha256 %s, pushed %s", t, sess.Handshake.GetBinarySha256(), res.SHA256)
		}
		if err == nil {
			c.Session = sess
		}
	}
	if err != nil {
		client.Close()
		return nil, err
	}
	c.Push = res
	log.DebugContext(ctx, "agent started", "node", t.String(), "uploaded", res.Uploaded, "bytes", res.Bytes)
	return c, nil
}

// start runs the agent installed for res over client and handshakes.
func (c *Conn) start(ctx context.Context, client *ssh.Client, res push.Result, o Options) (*session.Session, error) {
	t := c.Target
	begin := time.Now()
	defer func() { c.StartTime += time.Since(begin) }()
	sess, err := session.Start(ctx, client, agentCommand(t.User, res.RemotePath, o), session.Options{
		Name:              t.Host,
		ControllerVersion: o.ControllerVersion,
	})
	if err != nil {
		var exit *session.ExitError
		if errors.As(err, &exit) && sshx.IsSudoPasswordRequired(exit.Stderr) {
			return nil, fmt.Errorf("start agent: %s: %w", sshx.SudoPasswordMessage(t.String(), t.User), sshx.ErrSudoPassword)
		}
		return nil, fmt.Errorf("start agent on %s: %w", t, err)
	}
	return sess, nil
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
	return push.ExecCommand(user, remotePath, "serve", "--stdio", "--log-level", level, "--blob-dir", path.Clean(blobDir))
}

// Close ends the agent session and the SSH connection.
func (c *Conn) Close() error {
	if c.Session != nil {
		c.Session.Close()
	}
	return c.SSH.Close()
}
