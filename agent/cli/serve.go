package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/kthw/kthw/agent/server"
	"github.com/kthw/kthw/agent/stdio"
	"github.com/kthw/kthw/agent/transport"
)

type serveOptions struct {
	version string
	blobDir string
	logger  *slog.Logger
}

// serveStdio takes over stdio and serves until the controller closes it.
func serveStdio(ctx context.Context, opts serveOptions) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()

	conn, err := stdio.Take(opts.version)
	if err != nil {
		return err
	}
	defer conn.Close()

	srv := server.New(server.Options{Version: opts.version, Logger: opts.logger, BlobDir: opts.blobDir})
	opts.logger.Debug("serving on stdio", "version", opts.version, "pid", os.Getpid())
	return transport.Serve(ctx, conn, func(g *grpc.Server) { srv.Register(g) }, opts.logger)
}
