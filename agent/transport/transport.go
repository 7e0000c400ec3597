// Package transport serves gRPC on yamux streams over one byte stream (the
// agent's stdio in production, a pipe in tests).
//
// The settings are chosen for one controller talking to one agent over an SSH
// channel; docs/transport.md explains each. The controller side mirrors them.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// ServerOptions are the gRPC server settings the agent uses. There is no gRPC
// keepalive: yamux keepalive already watches the only link.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(agentv1.MaxMsgSize),
		grpc.MaxSendMsgSize(agentv1.MaxMsgSize),
		grpc.InitialWindowSize(agentv1.StreamWindow),
		grpc.InitialConnWindowSize(agentv1.ConnWindow),
	}
}

// Serve runs a gRPC server, populated by register, over yamux on conn until
// conn closes (the controller went away) or ctx is done. A closed conn is a
// normal end and returns nil.
func Serve(ctx context.Context, conn io.ReadWriteCloser, register func(*grpc.Server), logger *slog.Logger) error {
	mux, err := yamux.Server(conn, agentv1.MuxConfig(slogWriter{logger}))
	if err != nil {
		return fmt.Errorf("start yamux: %w", err)
	}
	srv := grpc.NewServer(ServerOptions()...)
	register(srv)

	done := make(chan error, 1)
	go func() { done <- srv.Serve(mux) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		mux.Close()
		<-done
		return ctx.Err()
	case <-mux.CloseChan():
		// Stdin closed or the keepalive failed: stop at once, cancelling
		// running modules through their contexts.
		srv.Stop()
		<-done
		return nil
	case err := <-done:
		mux.Close()
		if err == nil || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("serve grpc: %w", err)
	}
}

// slogWriter feeds yamux's log lines into slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	if w.l != nil {
		w.l.Warn("yamux", "msg", string(trimNL(p)))
	}
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
