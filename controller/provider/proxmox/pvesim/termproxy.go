package pvesim

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// VNC tickets as PVE::AccessControl makes them: "PVEVNC:<hex time>::<sig>",
// the signature over "PVEVNC:<hex time>:<authid>:<path>"; valid from 20s
// before to 40s after their time.
const (
	vncTicketBefore = 20 * time.Second
	vncTicketAfter  = 40 * time.Second
)

func (s *Server) newVNCTicket(authid, path string, at time.Time) string {
	plain := fmt.Sprintf("PVEVNC:%08X", at.Unix())
	return plain + "::" + s.sign(plain+":"+authid+":"+path)
}

func (s *Server) verifyVNCTicket(ticket, authid, path string) bool {
	plain, sig, ok := strings.Cut(ticket, "::")
	if !ok || !strings.HasPrefix(plain, "PVEVNC:") || len(plain) != len("PVEVNC:")+8 {
		return false
	}
	if sig != s.sign(plain+":"+authid+":"+path) {
		return false
	}
	ts, err := strconv.ParseInt(strings.TrimPrefix(plain, "PVEVNC:"), 16, 64)
	if err != nil {
		return false
	}
	age := time.Since(time.Unix(ts, 0))
	return age > -vncTicketBefore && age < vncTicketAfter
}

// termproxy's timeouts: for the client to connect, and for its ticket line.
const (
	termClientTimeout = 10 * time.Second
	termTicketTimeout = 10 * time.Second
)

// termSession is one termproxy process: it listens on a port for one
// client, checks the ticket line the client sends first and then runs
// `qm terminal VMID -escape 0 [-iface serialN]` on a pty.
type termSession struct {
	vmid   int
	node   string
	port   int
	serial string // "" when termproxy was given none and vga is no serial
	// claimed is closed when a client connected; done when the session
	// ended (exitErr says how).
	claimed chan struct{}
	done    chan struct{}
	exitErr error
}

// termproxy is POST /nodes/{node}/qemu/{vmid}/termproxy: a vncproxy task
// running termproxy on the next free port from 5900, and the ticket for
// it. It does not check that the VM runs: `qm terminal` does, once a
// client connected.
func (s *Server) termproxy(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"serial": {typ: tString, optional: true, enum: []string{"serial0", "serial1", "serial2", "serial3"}},
	}); err != nil {
		return nil, err
	}
	node, vmid := req.vars["node"], req.vmid()
	s.mu.Lock()
	v, err := s.loadVM(node, vmid)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	serial := req.str("serial")
	if serial == "" {
		if t, _ := parseProps(v.conf["vga"]).get("type"); strings.HasPrefix(t, "serial") {
			serial = t
		} else if p := parseProps(v.conf["vga"]); len(p) > 0 && p[0].k == "" && strings.HasPrefix(p[0].v, "serial") {
			serial = p[0].v
		}
	}
	port := 0
	for p := 5900; p <= 5999; p++ {
		if s.terms[p] == nil {
			port = p
			break
		}
	}
	if port == 0 {
		s.mu.Unlock()
		return nil, die("unable to find free port (5900-5999)")
	}
	ts := &termSession{vmid: vmid, node: node, port: port, serial: serial,
		claimed: make(chan struct{}), done: make(chan struct{})}
	s.terms[port] = ts
	ticket := s.newVNCTicket(req.authid, fmt.Sprintf("/vms/%d", vmid), time.Now())
	s.mu.Unlock()

	upid, err := s.startTask(req, node, "vncproxy", strconv.Itoa(vmid), func(tc *taskCtx) error {
		defer func() {
			s.mu.Lock()
			delete(s.terms, port)
			s.mu.Unlock()
		}()
		tc.logf("starting qemu termproxy")
		select {
		case <-ts.claimed:
		case <-time.After(termClientTimeout):
			return errors.New("failed waiting for client: timed out")
		case <-s.closing:
			return errors.New("interrupted by signal")
		}
		select {
		case <-ts.done:
			return ts.exitErr
		case <-s.closing:
			return errors.New("interrupted by signal")
		}
	})
	if err != nil {
		s.mu.Lock()
		delete(s.terms, port)
		s.mu.Unlock()
		return nil, err
	}
	return map[string]any{"user": req.authid, "ticket": ticket, "port": port, "upid": upid}, nil
}

// wsUpgrade is a handler's answer that takes the connection over (a
// websocket).
type wsUpgrade struct {
	serve func(w http.ResponseWriter, r *http.Request)
}

// vncwebsocket is GET /nodes/{node}/qemu/{vmid}/vncwebsocket: the ticket
// must be one termproxy (or vncproxy) issued to this user for this VM
// ("permission denied - invalid vnc ticket" otherwise); with an Upgrade
// header pveproxy then proxies the websocket to the port, without one the
// answer is {port}.
func (s *Server) vncwebsocket(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"vncticket": {typ: tString, maxLen: 512},
		"port":      {typ: tInt, min: bound(5900), max: bound(5999)},
	}); err != nil {
		return nil, err
	}
	node, vmid := req.vars["node"], req.vmid()
	if !s.verifyVNCTicket(req.str("vncticket"), req.authid, fmt.Sprintf("/vms/%d", vmid)) {
		return nil, die("permission denied - invalid vnc ticket")
	}
	s.mu.Lock()
	_, err := s.loadVM(node, vmid)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(req.str("port"))
	if !websocket.IsWebSocketUpgrade(req.r) {
		return map[string]any{"port": strconv.Itoa(port)}, nil
	}
	return &wsUpgrade{serve: func(w http.ResponseWriter, r *http.Request) { s.serveTerm(w, r, port) }}, nil
}

var termUpgrader = websocket.Upgrader{
	Subprotocols:    []string{"binary"},
	CheckOrigin:     func(*http.Request) bool { return true },
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
}

// serveTerm is pveproxy's websocket proxy to termproxy on port, and
// termproxy itself.
func (s *Server) serveTerm(w http.ResponseWriter, r *http.Request, port int) {
	conn, err := termUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer conn.Close()
	s.mu.Lock()
	ts := s.terms[port]
	if ts != nil {
		select {
		case <-ts.claimed:
			ts = nil // termproxy accepts one client only
		default:
			close(ts.claimed)
		}
	}
	s.mu.Unlock()
	if ts == nil {
		// Nothing listens on the port: pveproxy's connect fails and it
		// closes the websocket.
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, ""), time.Now().Add(time.Second))
		return
	}
	err = s.runTerm(conn, ts)
	ts.exitErr = err
	close(ts.done)
}

// runTerm is termproxy after accept: the ticket line, "OK", then the pty
// with `qm terminal`.
func (s *Server) runTerm(conn *websocket.Conn, ts *termSession) error {
	// The first line is "USER:TICKET\n"; what follows it is input.
	_ = conn.SetReadDeadline(time.Now().Add(termTicketTimeout))
	var buf []byte
	for !bytes.Contains(buf, []byte("\n")) {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("failed reading ticket: %v", err)
		}
		buf = append(buf, msg...)
		if len(buf) > 4096 {
			return errors.New("failed reading ticket: authentication data is incomplete")
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	line, rest, _ := bytes.Cut(buf, []byte("\n"))
	user, ticket, ok := strings.Cut(string(line), ":")
	if !ok {
		return errors.New("failed reading ticket: authentication data is invalid")
	}
	// termproxy relays the check to POST /access/ticket (username,
	// password=ticket, path, privs), whose username check refuses token
	// IDs ("user@realm!token").
	if strings.Contains(user, "!") {
		return errors.New("invalid authentication - 400 Parameter verification failed.")
	}
	if !s.verifyVNCTicket(ticket, user, fmt.Sprintf("/vms/%d", ts.vmid)) {
		return errors.New("invalid authentication - 401 authentication failure")
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte("OK")); err != nil {
		return err
	}

	// qm terminal VMID -escape 0 [-iface SERIAL]
	s.mu.Lock()
	v, err := s.loadVM(ts.node, ts.vmid)
	var msg string
	switch {
	case err != nil:
		msg = strings.TrimRight(err.Error(), "\n")
	case ts.serial != "" && v.conf[ts.serial] == "":
		msg = fmt.Sprintf("serial interface '%s' is not configured", ts.serial)
	case ts.serial != "" && v.conf[ts.serial] != "socket":
		msg = fmt.Sprintf("wrong serial type on interface '%s'", ts.serial)
	case ts.serial == "" && !hasSerialSocket(v.conf):
		msg = "unable to find a serial interface"
	case !v.running:
		msg = fmt.Sprintf("VM %d not running", ts.vmid)
	}
	iface := ts.serial
	if iface == "" && v != nil {
		iface = firstSerialSocket(v.conf)
	}
	var out <-chan []byte
	detach := func() {}
	if msg == "" {
		if v.console == nil {
			v.console = &console{}
		}
		out, detach = v.console.attach()
	}
	s.mu.Unlock()
	defer detach()
	if msg != "" {
		_ = conn.WriteMessage(websocket.BinaryMessage, []byte(msg+"\r\n"))
		closeTerm(conn)
		return nil // termproxy ends when its command does
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte("starting serial terminal on interface "+iface+"\r\n")); err != nil {
		return nil
	}

	// Client frames: "0:LEN:DATA" input, "1:COLS:ROWS:" resize, "2" ping.
	// The guest's serial input is not modelled: input is read and
	// dropped, as a guest without a getty on the port would.
	clientGone := make(chan struct{})
	go func() {
		defer close(clientGone)
		var q termQueue
		q.buf = rest
		q.drain()
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			q.buf = append(q.buf, msg...)
			q.drain()
		}
	}()
	for {
		select {
		case b, ok := <-out:
			if !ok { // the VM stopped: qm terminal's socat ends
				closeTerm(conn)
				<-clientGone
				return nil
			}
			if err := conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
				return nil
			}
		case <-clientGone:
			return nil
		case <-s.closing:
			closeTerm(conn)
			return nil
		}
	}
}

// closeTerm closes the websocket the way pveproxy does when termproxy's
// connection ends.
func closeTerm(conn *websocket.Conn) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
}

// termQueue parses the client's frames the way termproxy's process_queue
// does: bad numbers and unknown types are skipped.
type termQueue struct {
	buf     []byte
	pending int // bytes of a data frame still to come
}

func (q *termQueue) drain() {
	for len(q.buf) > 0 {
		if q.pending > 0 {
			n := min(q.pending, len(q.buf))
			q.buf, q.pending = q.buf[n:], q.pending-n
			continue
		}
		if len(q.buf) < 2 {
			return
		}
		switch q.buf[0] {
		case '0':
			rest := q.buf[2:]
			i := bytes.IndexByte(rest, ':')
			if i < 0 {
				return // incomplete
			}
			n, err := strconv.Atoi(string(rest[:i]))
			q.buf = rest[i+1:]
			if err == nil && n > 0 {
				q.pending = n
			}
		case '1':
			rest := q.buf[2:]
			parts := bytes.SplitN(rest, []byte(":"), 3)
			if len(parts) < 3 {
				return // incomplete
			}
			q.buf = parts[2]
		default:
			q.buf = q.buf[1:] // "2" (ping) and anything else
		}
	}
}

func hasSerialSocket(conf map[string]string) bool { return firstSerialSocket(conf) != "" }

func firstSerialSocket(conf map[string]string) string {
	for i := 0; i < 4; i++ {
		if k := fmt.Sprintf("serial%d", i); conf[k] == "socket" {
			return k
		}
	}
	return ""
}
