package stdio

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// The helper process takes stdio, then misbehaves the way a library or a
// child would: prints to fd 1 and reads fd 0. Neither may touch the transport.
func TestMain(m *testing.M) {
	if os.Getenv("KTHW_STDIO_HELPER") == "1" {
		conn, err := Take("v9")
		if err != nil {
			fmt.Fprintln(os.Stderr, "take:", err)
			os.Exit(2)
		}
		fmt.Println("stray print")
		n, _ := os.Stdin.Read(make([]byte, 16))
		cmd := exec.Command("sh", "-c", "echo child-out; read x; echo child-read=$x")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		_ = cmd.Run()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(conn, buf); err != nil {
			fmt.Fprintln(os.Stderr, "read transport:", err)
			os.Exit(3)
		}
		fmt.Fprintf(conn, "got %s, stray stdin read %d bytes", buf, n)
		conn.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestTakeProtectsTransport(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KTHW_STDIO_HELPER=1")
	cmd.Stdin = strings.NewReader("hello")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v; stderr: %s", err, stderr.String())
	}
	want := agentv1.StreamMagic + " v9\ngot hello, stray stdin read 0 bytes"
	if got := stdout.String(); got != want {
		t.Fatalf("transport carried %q, want %q", got, want)
	}
	for _, s := range []string{"stray print", "child-out", "child-read="} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("stderr lacks %q: %q", s, stderr.String())
		}
	}
}
