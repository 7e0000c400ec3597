package sshx

import (
	"net"

	"golang.org/x/sys/unix"
)

// quickAck makes a TCP connection acknowledge what it receives at once instead of after
// Linux's delayed-ACK timer (40 ms). sshd leaves Nagle's algorithm on for sessions without a
// terminal, so it holds back a small packet until the previous one is acknowledged: without
// this, a command's reply and its exit status, or the agent's first answers, each wait for a
// delayed ACK. Quick-ACK mode does not last, so it is asked for again after every read.
func quickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{TCPConn: tc, raw: raw}
	q.set()
	return q
}

type quickAckConn struct {
	*net.TCPConn
	raw interface {
		Control(func(fd uintptr)) error
	}
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if n > 0 {
		c.set()
	}
	return n, err
}

func (c *quickAckConn) set() {
	_ = c.raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}
