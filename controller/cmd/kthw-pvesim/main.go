// Command kthw-pvesim serves a simulated Proxmox VE API for trying kthw's
// proxmox provider without a Proxmox cluster. See package pvesim; with
// --lab its VMs are real lab nodes (package pvelab).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kthw/kthw/controller/provider/proxmox/pvelab"
	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cmd := pvesim.Command(version, os.Stdout, os.Stderr, &pvelab.Extension{})
	cmd.SetArgs(os.Args[1:])
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kthw-pvesim:", err)
		os.Exit(1)
	}
}
