// Package stdio turns the agent's standard input and output into the private
// transport of one controller session.
//
// The transport takes duplicates of fds 0 and 1; fd 0 is then pointed at
// /dev/null and fd 1 at stderr, so nothing else in the process — a child
// command, a library that prints, a stray fmt.Println — can read from or write
// into the multiplexed stream. Before the stream starts, Take prints the magic
// line that tells the controller where the stream begins; anything a shell
// printed before it is skipped by the controller.
package stdio

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Conn is the transport: reads come from the original stdin, writes go to the
// original stdout. Close closes both.
type Conn struct {
	r *os.File
	w *os.File
}

func (c *Conn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.w.Write(p) }

// Close closes both directions of the transport.
func (c *Conn) Close() error {
	err := c.w.Close()
	if rerr := c.r.Close(); err == nil {
		err = rerr
	}
	return err
}

// Take moves the transport off fds 0 and 1, protects them as described in the
// package comment, writes the magic line with the agent version and returns
// the transport.
func Take(version string) (*Conn, error) {
	in, err := dupCloexec(0)
	if err != nil {
		return nil, fmt.Errorf("dup stdin: %w", err)
	}
	out, err := dupCloexec(1)
	if err != nil {
		unix.Close(in)
		return nil, fmt.Errorf("dup stdout: %w", err)
	}
	null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(in)
		unix.Close(out)
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	defer unix.Close(null)
	if err := unix.Dup2(null, 0); err != nil {
		return nil, fmt.Errorf("redirect stdin: %w", err)
	}
	if err := unix.Dup2(2, 1); err != nil {
		return nil, fmt.Errorf("redirect stdout: %w", err)
	}
	c := &Conn{r: os.NewFile(uintptr(in), "transport-in"), w: os.NewFile(uintptr(out), "transport-out")}
	if err := WriteMagic(c.w, version); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// WriteMagic writes the line that marks the start of the multiplexed stream.
func WriteMagic(w io.Writer, version string) error {
	if _, err := fmt.Fprintf(w, "%s %s\n", agentv1.StreamMagic, version); err != nil {
		return fmt.Errorf("write stream magic: %w", err)
	}
	return nil
}

func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
}
