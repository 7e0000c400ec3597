package agentv1

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// Transport settings shared by both ends of a session; docs/transport.md
// explains each choice.
const (
	// MaxMsgSize bounds one gRPC message: inline file content and module
	// requests; bigger payloads travel as blobs in BlobChunkSize pieces.
	MaxMsgSize = 16 << 20
	// StreamWindow and ConnWindow are the gRPC flow-control windows, sized for
	// a long SSH pipe so blob uploads do not stall on window updates.
	StreamWindow = 1 << 20
	ConnWindow   = 4 << 20
)

// MuxConfig returns the yamux settings both ends use. log receives yamux's
// own log lines (nil discards them).
func MuxConfig(log io.Writer) *yamux.Config {
	cfg := yamux.DefaultConfig()
	// A dead SSH path must end the session on both sides within a minute:
	// the agent then exits instead of lingering on the node.
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = 15 * time.Second
	cfg.ConnectionWriteTimeout = 30 * time.Second
	// One stream (a blob upload) should be able to fill the SSH channel, whose
	// own window is 2 MiB; 4 MiB per stream keeps it busy without unbounded
	// buffering.
	cfg.MaxStreamWindowSize = 4 << 20
	cfg.StreamOpenTimeout = 30 * time.Second
	if log == nil {
		log = io.Discard
	}
	cfg.LogOutput = log
	return cfg
}
