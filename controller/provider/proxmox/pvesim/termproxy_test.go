package pvesim_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/kthw/kthw/controller/provider/proxmox/pvesim"
)

// ticketClient is a go-proxmox client that logs in with the simulator's
// user (a ticket): Proxmox's termproxy takes no API tokens.
func ticketClient(t *testing.T, sim *pvesim.Sim) *proxmox.Client {
	t.Helper()
	c := proxmox.NewClient(sim.URL,
		proxmox.WithCredentials(&proxmox.Credentials{Username: sim.Username, Password: sim.Password}),
		proxmox.WithRootCAs(sim.RootCAs), proxmox.WithTimeout(10*time.Second))
	if err := c.CreateSession(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return c
}

// runningConsoleVM starts a simulator whose guests print cloud-init's
// console after delay, and VM 100 in it, running; the client logs in with
// a ticket (termproxy refuses tokens).
func runningConsoleVM(t *testing.T, delay time.Duration) (*pvesim.Sim, *proxmox.VirtualMachine) {
	t.Helper()
	sim := pvesim.Start(t, pvesim.WithConfig(func(c *pvesim.Config) { c.ConsoleDelay = delay }))
	ctx := ctxT(t)
	vm := clonedVM(t, ticketClient(t, sim), "c1", "ip=10.0.0.50/24,gw=10.0.0.1")
	task, err := vm.Start(ctx)
	mustSucceed(t, ctx, task, err)
	return sim, vm
}

// readUntil collects console output until it contains want, d passed or
// the connection failed (then the caller must close it at once:
// go-proxmox's reader repeats a failed read until its closer runs).
func readUntil(recv <-chan []byte, errs <-chan error, want string, d time.Duration) string {
	var out strings.Builder
	deadline := time.After(d)
	for !strings.Contains(out.String(), want) {
		select {
		case b := <-recv:
			out.Write(b)
		case <-errs:
			return out.String()
		case <-deadline:
			return out.String()
		}
	}
	return out.String()
}

// closeTerm closes go-proxmox's websocket, reading what still arrives
// meanwhile (its reader would otherwise block on an unread channel and
// panic when the closer closes it).
func closeTerm(recv <-chan []byte, errs <-chan error, closer func() error) {
	done := make(chan struct{})
	go func() { _ = closer(); close(done) }()
	// Let the closer mark the socket done before the reader, unblocked by
	// the drain below, looks at it again (it re-reads a failed socket
	// until then).
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

// TestTermProxyConsole connects go-proxmox's TermProxy and TermWebSocket
// to a running VM's serial console: the answer's types, the "OK" after
// the ticket line, qm terminal's banner, cloud-init's host key block
// (only printed after the terminal connected), and the vncproxy task.
func TestTermProxyConsole(t *testing.T) {
	sim, vm := runningConsoleVM(t, 400*time.Millisecond)
	ctx := ctxT(t)

	// The raw answer: port is an integer, user the ticket's user.
	term, err := vm.TermProxy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(term.Port) < 5900 || int(term.Port) > 5999 || term.User != pvesim.TestUser || !strings.HasPrefix(term.Ticket, "PVEVNC:") ||
		!strings.HasPrefix(term.UPID, "UPID:pve1:") || !strings.Contains(term.UPID, ":vncproxy:100:") {
		t.Errorf("termproxy = %+v", term)
	}
	send, recv, errs, closer, err := vm.TermWebSocket(term)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	_ = send
	out := readUntil(recv, errs, "-----END SSH HOST KEY KEYS-----", 5*time.Second)
	if !strings.HasPrefix(out, "starting serial terminal on interface serial0\r\n") {
		t.Errorf("console starts %q", out[:min(len(out), 80)])
	}
	st, _ := sim.VM(100)
	key := strings.Fields(st.Guest.Files[pvesim.HostKeyFile])
	if !strings.Contains(out, "-----BEGIN SSH HOST KEY KEYS-----\r\n"+key[0]+" "+key[1]+" root@c1\r\n-----END SSH HOST KEY KEYS-----") {
		t.Errorf("console lacks the host key block with %s:\n%s", key[1], out)
	}
	out += readUntil(recv, errs, "c1 login: ", 5*time.Second)
	if !strings.HasSuffix(out, "c1 login: ") {
		t.Errorf("console ends %q", out[max(0, len(out)-80):])
	}
	closeTerm(recv, errs, closer)
	waitFor(t, "the vncproxy task to end", func() bool {
		tk, ok := sim.Task(term.UPID)
		return ok && !tk.Running
	})
	if tk, _ := sim.Task(term.UPID); tk.ExitStatus != "OK" {
		t.Errorf("vncproxy task: %q", tk.ExitStatus)
	}
}

// TestTermProxyLate: bytes printed before a terminal connects are not
// replayed, and a restart of the same instance prints no keys again.
func TestTermProxyLate(t *testing.T) {
	_, vm := runningConsoleVM(t, 50*time.Millisecond)
	ctx := ctxT(t)
	time.Sleep(500 * time.Millisecond) // cloud-init printed its keys meanwhile
	term, err := vm.TermProxy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, recv, errs, closer, err := vm.TermWebSocket(term)
	if err != nil {
		t.Fatal(err)
	}
	out := readUntil(recv, errs, "KEYS", 700*time.Millisecond)
	closeTerm(recv, errs, closer)
	if out != "starting serial terminal on interface serial0\r\n" {
		t.Errorf("late terminal got %q", out)
	}

	// Reboot (stop, start): the same instance prints the prompt only.
	task, err := vm.Stop(ctx)
	mustSucceed(t, ctx, task, err)
	task, err = vm.Start(ctx)
	mustSucceed(t, ctx, task, err)
	term, err = vm.TermProxy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, recv, errs, closer, err = vm.TermWebSocket(term)
	if err != nil {
		t.Fatal(err)
	}
	out = readUntil(recv, errs, "login: ", 3*time.Second)
	closeTerm(recv, errs, closer)
	if !strings.HasSuffix(out, "c1 login: ") || strings.Contains(out, "HOST KEY") {
		t.Errorf("second boot console %q", out)
	}
}

// TestTermProxyRefusals: a stopped VM, a wrong ticket, a token's ticket,
// no client at all.
func TestTermProxyRefusals(t *testing.T) {
	sim := pvesim.Start(t)
	c := ticketClient(t, sim)
	ctx := ctxT(t)
	vm := clonedVM(t, c, "c1", "ip=10.0.0.50/24,gw=10.0.0.1")

	// Stopped: the terminal opens, qm terminal says so, the socket closes.
	term, err := vm.TermProxy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, recv, errs, closer, err := vm.TermWebSocket(term)
	if err != nil {
		t.Fatal(err)
	}
	if out := readUntil(recv, errs, "not running", 3*time.Second); out != "VM 100 not running\r\n" {
		t.Errorf("stopped VM console %q", out)
	}
	closeTerm(recv, errs, closer)

	// A wrong ticket: pveproxy's check of vncticket fails the request.
	term, err = vm.TermProxy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := *term
	bad.Ticket = strings.Replace(term.Ticket, "::", "::x", 1)
	if _, _, _, _, err := vm.TermWebSocket(&bad); err == nil || !strings.Contains(err.Error(), "bad handshake") {
		t.Errorf("wrong ticket: %v", err)
	}
	wsURL := strings.Replace(sim.URL, "https://", "wss://", 1) + "/nodes/pve1/qemu/100/vncwebsocket?port=" +
		strconv.Itoa(int(term.Port)) + "&vncticket=" + url.QueryEscape(bad.Ticket)
	r := do(t, sim, http.MethodGet, "/nodes/pve1/qemu/100/vncwebsocket?port="+strconv.Itoa(int(term.Port))+"&vncticket="+url.QueryEscape(bad.Ticket), "", "")
	if r.code != 500 || r.status != "500 permission denied - invalid vnc ticket" {
		t.Errorf("wrong ticket answer %d %q", r.code, r.status)
	}
	// No credentials at all: 401 before the ticket is looked at.
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: sim.RootCAs}, Subprotocols: []string{"binary"}}
	if _, res, err := d.Dial(wsURL, nil); err == nil || res == nil || res.StatusCode != 401 {
		t.Errorf("no credentials: %v %v", res, err)
	}
	// Without an upgrade the call answers the port, as a string.
	var plain map[string]any
	if err := c.Get(ctx, "/nodes/pve1/qemu/100/vncwebsocket?port="+strconv.Itoa(int(term.Port))+"&vncticket="+url.QueryEscape(term.Ticket), &plain); err != nil ||
		plain["port"] != strconv.Itoa(int(term.Port)) {
		t.Errorf("vncwebsocket without upgrade: %v %v", plain, err)
	}

	// A token's termproxy: the answer names the token, and termproxy's
	// ticket check (POST /access/ticket) refuses a token ID; go-proxmox
	// refuses to try.
	tc := tokenClient(t, sim)
	node, _ := tc.Node(ctx, "pve1")
	tvm, _ := node.VirtualMachine(ctx, 100)
	tterm, err := tvm.TermProxy(ctx)
	if err != nil || tterm.User != pvesim.TestTokenID {
		t.Fatalf("token termproxy %+v %v", tterm, err)
	}
	if _, _, _, _, err := tvm.TermWebSocket(tterm); err != proxmox.ErrAPITokenWebSocketUnsupported {
		t.Errorf("go-proxmox with a token: %v", err)
	}
	hdr := http.Header{"Authorization": {"PVEAPIToken=" + sim.TokenID + "=" + sim.TokenSecret}}
	conn, _, err := d.Dial(strings.Replace(sim.URL, "https://", "wss://", 1)+"/nodes/pve1/qemu/100/vncwebsocket?port="+
		strconv.Itoa(int(tterm.Port))+"&vncticket="+url.QueryEscape(tterm.Ticket), hdr)
	if err != nil {
		t.Fatalf("token websocket: %v", err)
	}
	_ = conn.WriteMessage(websocket.BinaryMessage, []byte(tterm.User+":"+tterm.Ticket+"\n"))
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, msg, err := conn.ReadMessage(); err == nil {
		t.Errorf("token ticket line answered %q", msg)
	}
	conn.Close()
	waitFor(t, "the token's vncproxy task to fail", func() bool {
		tk, ok := sim.Task(tterm.UPID)
		return ok && !tk.Running
	})
	if tk, _ := sim.Task(tterm.UPID); tk.ExitStatus != "invalid authentication - 400 Parameter verification failed." {
		t.Errorf("token vncproxy task: %q", tk.ExitStatus)
	}

	// Nobody connects: termproxy gives up after 10s.
	if testing.Short() {
		return
	}
	term, err = vm.TermProxy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if tk, ok := sim.Task(term.UPID); ok && !tk.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unused termproxy still running")
		}
	}
	if tk, _ := sim.Task(term.UPID); tk.ExitStatus != "failed waiting for client: timed out" {
		t.Errorf("unused termproxy: %q", tk.ExitStatus)
	}
}
