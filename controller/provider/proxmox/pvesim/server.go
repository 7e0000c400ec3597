package pvesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BasePath is where the API lives, as on pveproxy.
const BasePath = "/api2/json"

// AdminPath is where the simulator's own endpoints live (see admin.go).
const AdminPath = "/pvesim"

// Server is the simulator: an http.Handler for /api2/json (and /pvesim
// for its own state and fault knobs) with a Go API for tests. Make one with
// New; Close stops its tasks.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	routes  []*route

	mu       sync.Mutex
	nodes    []*node
	storages []*storage
	pools    map[string]bool
	vms      map[int]*vm
	volumes  map[string]*volume // by volKey
	tasks    []*task
	taskIdx  map[string]*task
	locks    map[int]*cfgLock
	faults   Faults
	stats    FaultStats
	calls    map[string]int
	nextPID  int
	secret   []byte
	booted   time.Time
	closing  chan struct{}
	closed   bool
	bgTasks  sync.WaitGroup
	vmBusy   map[int]*sync.Mutex  // serializes backend calls per VM
	stolen   map[int]bool         // VMIDs a fault handed to "another client"
	terms    map[int]*termSession // termproxy sessions by port
	pveMajor int
}

// New builds a simulator from cfg. It fails on an inconsistent config
// (a template on an unknown node, a duplicate VMID, ...).
func New(cfg Config) (*Server, error) {
	s := &Server{
		pools:   map[string]bool{},
		vms:     map[int]*vm{},
		volumes: map[string]*volume{},
		taskIdx: map[string]*task{},
		locks:   map[int]*cfgLock{},
		stats:   FaultStats{},
		calls:   map[string]int{},
		nextPID: 0x2A3F0,
		booted:  time.Now().Add(-36 * time.Hour),
		closing: make(chan struct{}),
		vmBusy:  map[int]*sync.Mutex{},
		stolen:  map[int]bool{},
		terms:   map[int]*termSession{},
	}
	s.secret = []byte(randomHex(32))
	if err := s.init(cfg); err != nil {
		return nil, err
	}
	s.routes = s.buildRoutes()
	return s, nil
}

// Close stops running tasks and waits for them. Requests after Close still
// get answers; new tasks fail.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.bgTasks.Wait()
}

// route is one API endpoint.
type route struct {
	method  string
	pattern string
	segs    []string
	handle  func(*request) (any, error)
	// perm is the permission Proxmox checks, for ForbidRule's default text.
	perm func(*request) string
}

// request is one API call as the handlers see it.
type request struct {
	s      *Server
	r      *http.Request
	method string
	path   string // below BasePath
	route  *route
	vars   map[string]string
	params map[string]string
	// authid is "user@realm" or "user@realm!token".
	authid, user, tokenid string
	// extra fields next to "data" (e.g. "total").
	extra map[string]any
}

func (r *request) param(k string) (string, bool) {
	v, ok := r.params[k]
	return v, ok
}

func (r *request) str(k string) string { return r.params[k] }

func (r *request) boolean(k string) bool {
	v := r.params[k]
	return v == "1"
}

func (r *request) vmid() int {
	n, _ := strconv.Atoi(r.params["vmid"])
	return n
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	if strings.HasPrefix(hr.URL.Path, AdminPath+"/") {
		s.serveAdmin(w, hr)
		return
	}
	rel, ok := strings.CutPrefix(hr.URL.Path, BasePath)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		writeError(w, &apiError{status: http.StatusNotImplemented, msg: "no such uri", bodyless: true})
		return
	}
	if rel == "" {
		rel = "/"
	}
	if len(rel) > 1 {
		rel = strings.TrimSuffix(rel, "/")
	}
	req := &request{s: s, r: hr, method: hr.Method, path: rel}
	start := time.Now()
	data, err := s.serve(req)
	if s.log != nil {
		status := 200
		if ae, ok := err.(*apiError); ok {
			status = ae.status
		}
		s.log.Debug("request", "method", hr.Method, "path", rel, "status", status, "took", time.Since(start))
	}
	if err != nil {
		ae := toAPIError(err)
		if ae.status == http.StatusUnauthorized && s.cfg.UnauthorizedDelay > 0 {
			time.Sleep(s.cfg.UnauthorizedDelay)
		}
		writeError(w, ae)
		return
	}
	if up, ok := data.(*wsUpgrade); ok {
		up.serve(w, hr)
		return
	}
	writeData(w, data, req.extra)
}

func (s *Server) serve(req *request) (any, error) {
	if !noAuth(req.method, req.path) {
		if err := s.authenticate(req); err != nil {
			return nil, err
		}
	}
	rt, vars := s.match(req.method, req.path)
	if rt == nil {
		s.count("UNMATCHED " + req.method)
		return nil, &apiError{status: http.StatusNotImplemented, msg: fmt.Sprintf("Method '%s %s' not implemented", req.method, req.path), noNewline: true}
	}
	req.route, req.vars = rt, vars
	s.count(rt.method + " " + rt.pattern)
	if (req.method == http.MethodGet || req.method == http.MethodDelete) && req.r.ContentLength > 0 {
		return nil, &apiError{status: http.StatusNotImplemented, msg: fmt.Sprintf("Unexpected content for method '%s'", req.method), bodyless: true}
	}
	params, err := readParams(req.r)
	if err != nil {
		return nil, err
	}
	for k, v := range vars {
		if pv, ok := params[k]; ok && pv != v {
			return nil, paramErr(map[string]string{k: "duplicate parameter (already defined in URI) with conflicting values!"})
		}
		params[k] = v
	}
	req.params = params
	if err := s.checkFaults(req); err != nil {
		return nil, err
	}
	if n, ok := vars["node"]; ok {
		if err := s.resolveNode(n); err != nil {
			return nil, err
		}
	}
	if v, ok := vars["vmid"]; ok {
		if msg := checkVMID(v); msg != "" {
			return nil, paramErr(map[string]string{"vmid": msg})
		}
	}
	return rt.handle(req)
}

// noAuth lists the calls pveproxy lets through without credentials.
func noAuth(method, path string) bool {
	switch path {
	case "/access/ticket":
		return method == http.MethodGet || method == http.MethodPost
	case "/access/domains":
		return method == http.MethodGet
	}
	return false
}

func (s *Server) match(method, path string) (*route, map[string]string) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if path == "/" {
		segs = nil
	}
	for _, rt := range s.routes {
		if rt.method != method {
			continue
		}
		rest := strings.HasSuffix(rt.pattern, "...}")
		if len(rt.segs) != len(segs) && !(rest && len(segs) > len(rt.segs)) {
			continue
		}
		vars := map[string]string{}
		ok := true
		for i, p := range rt.segs {
			if strings.HasSuffix(p, "...}") { // the rest of the path (fragmentDelimiter '')
				v, err := url.PathUnescape(strings.Join(segs[i:], "/"))
				if err != nil || v == "" {
					ok = false
					break
				}
				vars[strings.TrimSuffix(strings.Trim(p, "{}"), "...")] = v
				break
			}
			if strings.HasPrefix(p, "{") {
				v, err := url.PathUnescape(segs[i])
				if err != nil || v == "" {
					ok = false
					break
				}
				vars[strings.Trim(p, "{}")] = v
			} else if p != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return rt, vars
		}
	}
	return nil, nil
}

func (s *Server) count(key string) {
	s.mu.Lock()
	s.calls[key]++
	s.mu.Unlock()
}

// readParams merges the query string and the body (JSON or form-encoded)
// into strings the way pveproxy hands them to the API code: JSON numbers as
// their text, JSON booleans as "1"/"0", null as absent.
func readParams(hr *http.Request) (map[string]string, error) {
	params := map[string]string{}
	for k, vs := range hr.URL.Query() {
		if len(vs) > 0 {
			params[k] = vs[len(vs)-1]
		}
	}
	if hr.Body == nil {
		return params, nil
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, 64<<20))
	if err != nil {
		return nil, &apiError{status: http.StatusBadRequest, msg: "unable to read request body"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return params, nil
	}
	ct := hr.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/json") {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return nil, &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf("malformed JSON string: %v", err)}
		}
		for k, v := range m {
			switch x := v.(type) {
			case nil:
			case string:
				params[k] = x
			case json.Number:
				params[k] = x.String()
			case bool:
				params[k] = map[bool]string{true: "1", false: "0"}[x]
			case []any:
				parts := make([]string, 0, len(x))
				for _, e := range x {
					parts = append(parts, fmt.Sprint(e))
				}
				params[k] = strings.Join(parts, ",")
			default:
				b, _ := json.Marshal(x)
				params[k] = string(b)
			}
		}
		return params, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, &apiError{status: http.StatusBadRequest, msg: "unable to parse form data"}
	}
	for k, vs := range form {
		if len(vs) > 0 {
			params[k] = vs[len(vs)-1]
		}
	}
	return params, nil
}

// Calls returns how often each endpoint was called, keyed "METHOD
// /pattern", e.g. "POST /nodes/{node}/qemu/{vmid}/clone". Requests that
// matched no endpoint count as "UNMATCHED METHOD".
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// CallCount returns how often one endpoint ("METHOD /pattern") was called.
func (s *Server) CallCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

// ResetCalls zeroes the call counters.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	s.calls = map[string]int{}
	s.mu.Unlock()
}

// Endpoints lists the endpoints the simulator serves, "METHOD /pattern".
func (s *Server) Endpoints() []string {
	out := make([]string, 0, len(s.routes))
	for _, rt := range s.routes {
		out = append(out, rt.method+" "+rt.pattern)
	}
	slices.Sort(out)
	return out
}
