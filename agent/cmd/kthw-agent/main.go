// Command kthw-agent is the node agent of kthw. See package agent/cli.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/kthw/kthw/agent/cli"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := cli.New(version, os.Stdin, os.Stdout, os.Stderr).Run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kthw-agent:", err)
		os.Exit(1)
	}
}
