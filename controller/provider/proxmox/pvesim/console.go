package pvesim

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// console is a VM's serial port (serial0: socket). What the guest writes
// goes to the terminals attached at that moment; nothing is kept for a
// terminal that attaches later, as with QEMU's socket chardev.
type console struct {
	mu   sync.Mutex
	next int
	subs map[int]chan []byte
}

// consoleBuffer is how many writes an attached terminal may lag behind
// before further output is dropped for it (a stalled reader).
const consoleBuffer = 1024

// attach connects a terminal; the channel closes at hangup (the VM
// stopped) or detach.
func (c *console) attach() (<-chan []byte, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs == nil {
		c.subs = map[int]chan []byte{}
	}
	id := c.next
	c.next++
	ch := make(chan []byte, consoleBuffer)
	c.subs[id] = ch
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if ch, ok := c.subs[id]; ok {
			delete(c.subs, id)
			close(ch)
		}
	}
}

// write sends b to every attached terminal.
func (c *console) write(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.subs {
		select {
		case ch <- append([]byte(nil), b...):
		default:
		}
	}
}

// hangup closes every attached terminal (the QEMU process ended).
func (c *console) hangup() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ch := range c.subs {
		delete(c.subs, id)
		close(ch)
	}
}

// ConsoleLines renders what a Debian cloud image prints on its serial
// console when cloud-init's final stage runs: at an instance's first boot
// (firstBoot) cc_keys_to_console's fingerprints (through syslog, "<14>")
// and its "SSH HOST KEY KEYS" block written straight to the console,
// then cloud-init's finish line and the login prompt. keys are the host
// public keys in authorized_keys format; none leaves the blocks out (an
// image that does not print them).
func ConsoleLines(host string, keys []string, at time.Time, uptime time.Duration, firstBoot bool) []string {
	stamp := at.UTC().Format(time.Stamp)
	up := uptime.Seconds()
	kern := func(d float64, msg string) string { return fmt.Sprintf("[%12.6f] cloud-init[612]: %s", d, msg) }
	lines := []string{
		"[  OK  ] Finished cloud-config.service - Apply the settings specified in cloud-config.",
		"         Starting cloud-final.service - Execute cloud user/final scripts...",
	}
	if firstBoot && len(keys) > 0 {
		var fps []string
		for _, k := range keys {
			pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				continue
			}
			bits := 256
			if pub.Type() == ssh.KeyAlgoRSA {
				bits = 3072
			}
			kind := strings.ToUpper(strings.TrimPrefix(pub.Type(), "ssh-"))
			if strings.HasPrefix(pub.Type(), "ecdsa-") {
				kind = "ECDSA"
			}
			fps = append(fps, fmt.Sprintf("<14>%s cloud-init: %d %s %s (%s)", stamp, bits, ssh.FingerprintSHA256(pub), comment, kind))
		}
		lines = append(lines,
			"<14>"+stamp+" cloud-init: #############################################################",
			"<14>"+stamp+" cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----")
		lines = append(lines, fps...)
		lines = append(lines,
			"<14>"+stamp+" cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
			"<14>"+stamp+" cloud-init: #############################################################",
			"-----BEGIN SSH HOST KEY KEYS-----")
		for _, k := range keys {
			lines = append(lines, strings.TrimSpace(k))
		}
		lines = append(lines, "-----END SSH HOST KEY KEYS-----")
	}
	started := at.Add(-2 * time.Second).UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700")
	lines = append(lines,
		kern(up-1.9, fmt.Sprintf("Cloud-init v. 22.4.2 running 'modules:final' at %s. Up %.2f seconds.", started, up-2)),
		kern(up, fmt.Sprintf("Cloud-init v. 22.4.2 finished at %s. Datasource DataSourceNoCloud [seed=/dev/sr0][dsmode=net].  Up %.2f seconds",
			at.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"), up)),
		"[  OK  ] Finished cloud-final.service - Execute cloud user/final scripts.",
		"[  OK  ] Reached target cloud-init.target - Cloud-init target.",
		"",
		"Debian GNU/Linux 12 "+host+" ttyS0",
		"",
	)
	return lines
}

// scheduleConsole prints cloud-init's last stage on v's console
// ConsoleDelay after the start, unless the VM stopped or started again
// meanwhile. Callers hold s.mu.
func (s *Server) scheduleConsole(v *vm, gen int, info VMInfo, firstBoot bool) {
	if !hasSerial(v.conf) {
		return
	}
	delay := s.cfg.ConsoleDelay
	if delay <= 0 {
		delay = 5 * time.Second
	}
	keys := v.guest.HostKeys
	if len(keys) == 0 {
		if k := strings.TrimSpace(v.guest.Files[HostKeyFile]); k != "" {
			keys = []string{k}
		}
	}
	if !info.HasCloudInit || s.faults.ConsoleNoKeys {
		keys = nil // no cloud-init run, or an image that does not print them
	}
	host := v.guest.Hostname
	if host == "" {
		host = hostLabel(info.Name)
	}
	con := v.console
	started := v.startedAt
	go func() {
		select {
		case <-s.closing:
			return
		case <-time.After(delay):
		}
		lines := ConsoleLines(host, keys, time.Now(), time.Since(started)+10*time.Second, firstBoot)
		for i, l := range lines {
			s.mu.Lock()
			current := v.running && v.bootGen == gen
			s.mu.Unlock()
			if !current {
				return
			}
			end := "\r\n"
			if i == len(lines)-1 {
				end = host + " login: "
			}
			con.write([]byte(l + end))
			select {
			case <-s.closing:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
}
