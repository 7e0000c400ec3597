// Command hello is the whole of the test image the containerd lab test
// builds: a static binary that proves it ran inside a container.
package main

import (
	"fmt"
	"os"
)

func main() {
	host, _ := os.Hostname()
	fmt.Printf("hello from a kthw test image (pid %d, hostname %s, args %q)\n", os.Getpid(), host, os.Args[1:])
}
