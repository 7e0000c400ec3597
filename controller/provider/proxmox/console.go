package proxmox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"
)

// The block cloud-init's cc_keys_to_console writes to the console at an
// instance's first boot, one host public key a line.
const (
	hostKeysBegin = "-----BEGIN SSH HOST KEY KEYS-----"
	hostKeysEnd   = "-----END SSH HOST KEY KEYS-----"
)

// ErrNoConsoleKeys: the builder VM's serial console did not show
// cloud-init's SSH host key block in time.
var ErrNoConsoleKeys = errors.New("no SSH host keys on the serial console")

// ParseConsoleHostKeys finds cloud-init's host key block in console output
// and returns its keys in authorized_keys format ("TYPE BASE64 COMMENT").
// Lines of the block that are not keys (a line the console cut short,
// syslog lines interleaved) are skipped. ok is false until the block's
// end marker was seen.
func ParseConsoleHostKeys(out []byte) (keys []string, ok bool) {
	text := strings.ReplaceAll(string(out), "\r", "")
	_, rest, found := strings.Cut(text, hostKeysBegin)
	if !found {
		return nil, false
	}
	block, _, found := strings.Cut(rest, hostKeysEnd)
	if !found {
		return nil, false
	}
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			continue
		}
		k := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
		if comment != "" {
			k += " " + comment
		}
		keys = append(keys, k)
	}
	return keys, true
}

// consoleHostKeys reads the VM's serial console through the API
// (termproxy, then its websocket) until cloud-init prints the host key
// block, and returns its keys. The VM must run (`qm terminal` refuses a
// stopped one); what the guest printed before the terminal connected is
// gone, so call it as soon as the VM runs. A terminal that closes early is
// opened again until timeout.
func (p *Provider) consoleHostKeys(ctx context.Context, c *pve.Client, r vmRef, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	var seen bytes.Buffer // for the error: the console's tail
	for attempt := 0; ; attempt++ {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w: the serial console (serial0) of %s showed no %q block within %s (cloud-init prints it at the image's first boot; does the image have console=ttyS0 and cloud-init's keys_to_console?); its last output: %q",
				ErrNoConsoleKeys, r, hostKeysBegin, timeout, tail(seen.Bytes(), 300))
		}
		keys, done, err := p.readConsole(ctx, c, r, left, &seen)
		if err != nil {
			return nil, err
		}
		if done {
			return keys, nil
		}
		p.log.DebugContext(ctx, "serial console closed early; opening it again", "vmid", r.id, "attempt", attempt+1)
		if err := p.w.clock.Sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// readConsole opens the console once and reads until the key block is
// complete (done), the terminal closes, or d passes.
func (p *Provider) readConsole(ctx context.Context, c *pve.Client, r vmRef, d time.Duration, seen *bytes.Buffer) ([]string, bool, error) {
	vm := handle(c, r)
	term, err := vm.TermProxy(ctx)
	if err != nil {
		return nil, false, authError("open the serial console of "+r.String()+" (termproxy)", err)
	}
	_, recv, errs, closer, err := vm.TermWebSocket(term)
	if errors.Is(err, pve.ErrAPITokenWebSocketUnsupported) {
		return nil, false, ErrTokenConsole
	}
	if err != nil {
		return nil, false, fmt.Errorf("connect to the serial console of %s: %w", r, err)
	}
	defer closeConsole(recv, errs, closer)
	var out bytes.Buffer
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case b := <-recv:
			out.Write(b)
			seen.Write(b)
			if keys, ok := ParseConsoleHostKeys(out.Bytes()); ok {
				if len(keys) == 0 {
					return nil, false, fmt.Errorf("%w: the %q block on the console of %s holds no key we can read", ErrNoConsoleKeys, hostKeysBegin, r)
				}
				return keys, true, nil
			}
			if bytes.Contains(out.Bytes(), []byte(fmt.Sprintf("VM %d not running", r.id))) {
				return nil, false, fmt.Errorf("read the serial console of %s: the VM stopped before cloud-init printed its host keys", r)
			}
		case <-errs:
			return nil, false, nil // closed: the caller opens it again
		case <-timer.C:
			return nil, false, nil
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// ErrTokenConsole explains why an API token cannot read a console.
var ErrTokenConsole = errors.New("reading the builder VM's serial console needs a password login: Proxmox's termproxy does not accept API tokens (it checks the ticket with a user name, and a token ID is none); set provider.proxmox.username and passwordRef (a user with VM.Console) instead of tokenID for template build")

// closeConsole closes go-proxmox's terminal. Its reader goroutine sends on
// recv and errs until the closer marks the socket done, and repeats a
// failed read until then; the closer closes those channels after a
// second. So: start the closer, give it a moment to mark the socket done,
// then drain both channels until it returned.
func closeConsole(recv <-chan []byte, errs <-chan error, closer func() error) {
	done := make(chan struct{})
	go func() {
		_ = closer()
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	for {
		select {
		case <-recv:
		case <-errs:
		case <-done:
			return
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
