package pvesim

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultTaskDurations are the task durations of the kthw-pvesim command,
// roughly what a small Proxmox host takes; Start uses milliseconds instead.
func DefaultTaskDurations() map[string]time.Duration {
	return map[string]time.Duration{
		"qmclone":    3 * time.Second,
		"qmcreate":   2 * time.Second,
		"qmconfig":   300 * time.Millisecond,
		"resize":     500 * time.Millisecond,
		"qmstart":    1500 * time.Millisecond,
		"qmstop":     700 * time.Millisecond,
		"qmshutdown": 3 * time.Second,
		"qmreboot":   5 * time.Second,
		"qmdestroy":  1 * time.Second,
		"qmtemplate": 1 * time.Second,
		"download":   3 * time.Second,
		"imgdel":     300 * time.Millisecond,
	}
}

// task is a worker task (fork_worker).
type task struct {
	upid                  string
	node, typ, id         string
	user, tokenid, authid string
	pid, pstart           int
	start, end            time.Time
	running               bool
	exit                  string
	log                   []string
}

// TaskState is a task as tests see it.
type TaskState struct {
	UPID, Node, Type, ID, User string
	Running                    bool
	// ExitStatus is "OK", "WARNINGS: n" or the error text once stopped.
	ExitStatus string
	Start, End time.Time
	Log        []string
}

// taskCtx is what a task body uses to pace itself and log.
type taskCtx struct {
	s        *Server
	t        *task
	dur      time.Duration
	warnings int
}

func (tc *taskCtx) logf(format string, args ...any) {
	tc.s.mu.Lock()
	tc.t.log = append(tc.t.log, strings.Split(fmt.Sprintf(format, args...), "\n")...)
	tc.s.mu.Unlock()
}

func (tc *taskCtx) warn(format string, args ...any) {
	tc.warnings++
	tc.logf("WARN: "+format, args...)
}

// sleep waits frac of the task's duration; Close interrupts it.
func (tc *taskCtx) sleep(frac float64) error {
	d := time.Duration(float64(tc.dur) * frac)
	if d <= 0 {
		return nil
	}
	select {
	case <-tc.s.closing:
		return errors.New("interrupted by signal")
	case <-time.After(d):
		return nil
	}
}

func (s *Server) taskDuration(typ string) time.Duration {
	if d, ok := s.cfg.TaskDurations[typ]; ok {
		return d
	}
	return s.cfg.DefaultTaskDuration
}

// startTask forks a worker like RPCEnvironment::fork_worker and returns its
// UPID. body runs in its own goroutine; an error ends the task with that
// text, warnings end it with "WARNINGS: n". Callers do not hold s.mu.
func (s *Server) startTask(req *request, node, typ, id string, body func(*taskCtx) error) (string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", die("fork worker failed - server is shutting down")
	}
	now := time.Now()
	s.nextPID += 1 + len(s.tasks)%7
	t := &task{
		node: node, typ: typ, id: id,
		user: req.user, tokenid: req.tokenid, authid: req.authid,
		pid:     s.nextPID,
		pstart:  int(now.Sub(s.booted)/(10*time.Millisecond)) + 1234,
		start:   now,
		running: true,
	}
	t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, t.pid, t.pstart, now.Unix(), typ, id, t.authid)
	for s.taskIdx[t.upid] != nil { // same second, same pid: bump pid
		t.pid++
		t.upid = fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, t.pid, t.pstart, now.Unix(), typ, id, t.authid)
	}
	s.tasks = append(s.tasks, t)
	s.taskIdx[t.upid] = t
	fail := takeMap(s.faults.TaskFailures, typ)
	warn := takeMap(s.faults.TaskWarnings, typ)
	failText := s.faults.TaskFailureText
	if fail {
		s.stats["task_failure"]++
	}
	if warn {
		s.stats["task_warning"]++
	}
	s.bgTasks.Add(1)
	s.mu.Unlock()

	tc := &taskCtx{s: s, t: t, dur: s.taskDuration(typ)}
	go func() {
		defer s.bgTasks.Done()
		var err error
		if fail {
			if err = tc.sleep(1); err == nil {
				if failText == "" {
					failText = "simulated failure"
				}
				err = errors.New(failText)
			}
		} else {
			err = body(tc)
		}
		if err == nil && warn {
			tc.warn("simulated warning")
		}
		s.finishTask(tc, err)
	}()
	s.log.Info("task started", "upid", t.upid)
	return t.upid, nil
}

func (s *Server) finishTask(tc *taskCtx, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := tc.t
	t.running = false
	t.end = time.Now()
	switch {
	case err != nil:
		msg := err.Error()
		if ae, ok := err.(*apiError); ok {
			msg = ae.msg
		}
		msg = strings.TrimRight(msg, "\n")
		msg = strings.ReplaceAll(msg, "\n", " ")
		t.exit = msg
		t.log = append(t.log, "TASK ERROR: "+msg)
	case tc.warnings > 0:
		t.exit = fmt.Sprintf("WARNINGS: %d", tc.warnings)
		t.log = append(t.log, "TASK "+t.exit)
	default:
		t.exit = "OK"
		t.log = append(t.log, "TASK OK")
	}
	s.log.Info("task finished", "upid", t.upid, "exitstatus", t.exit)
}

var upidRE = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`)

// findTask resolves a UPID from the path the way read_task_status does.
func (s *Server) findTask(req *request) (*task, error) {
	upid := req.vars["upid"]
	if !upidRE.MatchString(upid) {
		return nil, paramErr(map[string]string{"upid": "unable to parse worker upid"})
	}
	t := s.taskIdx[upid]
	if t == nil || t.node != req.vars["node"] {
		return nil, paramErr(map[string]string{"upid": "no such task"})
	}
	return t, nil
}

// taskStatus is GET /nodes/{node}/tasks/{upid}/status.
func (s *Server) taskStatus(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{"upid": {typ: tString}}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.findTask(req)
	if err != nil {
		return nil, err
	}
	res := map[string]any{
		"upid":      t.upid,
		"node":      t.node,
		"pid":       t.pid,
		"pstart":    t.pstart,
		"starttime": t.start.Unix(),
		"type":      t.typ,
		"id":        t.id,
		"user":      t.user,
		"status":    "running",
	}
	if t.tokenid != "" {
		res["tokenid"] = t.tokenid
	}
	if !t.running {
		res["status"] = "stopped"
		res["exitstatus"] = t.exit
	}
	return res, nil
}

// taskLog is GET /nodes/{node}/tasks/{upid}/log.
func (s *Server) taskLog(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"upid":     {typ: tString},
		"start":    {typ: tInt, optional: true, min: bound(0)},
		"limit":    {typ: tInt, optional: true, min: bound(0)},
		"download": {typ: tBool, optional: true},
	}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.findTask(req)
	if err != nil {
		return nil, err
	}
	start, limit := 0, 50
	if v, ok := req.param("start"); ok {
		start, _ = strconv.Atoi(v)
	}
	if v, ok := req.param("limit"); ok {
		limit, _ = strconv.Atoi(v)
	}
	lines := t.log
	if len(lines) == 0 {
		lines = []string{"no content"}
	}
	out := []map[string]any{}
	for i, l := range lines {
		if i < start {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, map[string]any{"n": i + 1, "t": l})
	}
	req.extra = map[string]any{"total": len(lines)}
	return out, nil
}

// taskList is GET /nodes/{node}/tasks (newest first).
func (s *Server) taskList(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, t := range slices.Backward(s.tasks) {
		if t.node != req.vars["node"] {
			continue
		}
		out = append(out, s.taskEntry(t))
	}
	return out, nil
}

// clusterTasks is GET /cluster/tasks.
func (s *Server) clusterTasks(*request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, t := range slices.Backward(s.tasks) {
		out = append(out, s.taskEntry(t))
	}
	return out, nil
}

func (s *Server) taskEntry(t *task) map[string]any {
	e := map[string]any{
		"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
		"starttime": t.start.Unix(), "type": t.typ, "id": t.id, "user": t.authid,
	}
	if !t.running {
		e["endtime"] = t.end.Unix()
		e["status"] = t.exit
	}
	return e
}

// Tasks returns every task so far, oldest first.
func (s *Server) Tasks() []TaskState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TaskState, 0, len(s.tasks))
	for _, t := range s.tasks {
		out = append(out, taskState(t))
	}
	return out
}

// Task returns one task by UPID.
func (s *Server) Task(upid string) (TaskState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.taskIdx[upid]
	if !ok {
		return TaskState{}, false
	}
	return taskState(t), true
}

func taskState(t *task) TaskState {
	return TaskState{UPID: t.upid, Node: t.node, Type: t.typ, ID: t.id, User: t.authid, Running: t.running,
		ExitStatus: t.exit, Start: t.start, End: t.end, Log: slices.Clone(t.log)}
}

// WaitTasks waits until no task runs or the timeout passes, and reports
// whether all finished.
func (s *Server) WaitTasks(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		running := false
		for _, t := range s.tasks {
			running = running || t.running
		}
		s.mu.Unlock()
		if !running {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}
