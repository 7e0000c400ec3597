package pvesim

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

var powerSpecs = map[string]pspec{
	"skiplock":             {typ: tBool, optional: true},
	"timeout":              {typ: tInt, optional: true, min: bound(0)},
	"machine":              {typ: tString, optional: true},
	"stateuri":             {typ: tString, optional: true},
	"migratedfrom":         {typ: tString, optional: true},
	"migration_type":       {typ: tString, optional: true, enum: []string{"secure", "insecure"}},
	"migration_network":    {typ: tString, optional: true},
	"targetstorage":        {typ: tString, optional: true},
	"force-cpu":            {typ: tString, optional: true},
	"keepActive":           {typ: tBool, optional: true},
	"forceStop":            {typ: tBool, optional: true},
	"overrule-shutdown":    {typ: tBool, optional: true},
	"nets-host-mtu":        {typ: tString, optional: true},
	"with-conntrack-state": {typ: tBool, optional: true},
}

// rootOnly rejects root-only options for anybody but root@pam (a token of
// root is not root@pam).
func rootOnly(req *request, keys ...string) error {
	for _, k := range keys {
		if req.boolean(k) && req.authid != "root@pam" {
			return paramErr(map[string]string{k: "Only root may use this option."})
		}
	}
	return nil
}

// backendContext is canceled when the server closes.
func (s *Server) backendContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// vmStart is POST /nodes/{node}/qemu/{vmid}/status/start.
func (s *Server) vmStart(req *request) (any, error) {
	if err := validate(req.params, powerSpecs); err != nil {
		return nil, err
	}
	if err := rootOnly(req, "skiplock"); err != nil {
		return nil, err
	}
	node, vmid := req.vars["node"], req.vmid()
	skiplock := req.boolean("skiplock")
	return s.startTask(req, node, "qmstart", strconv.Itoa(vmid), func(tc *taskCtx) error {
		if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
			return err
		}
		defer s.unlockVM(vmid, true)
		return s.bootLocked(node, vmid, skiplock, tc)
	})
}

// bootVM starts a VM from within another task (create's autostart).
func (s *Server) bootVM(node string, vmid int, tc *taskCtx) error {
	if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
		return err
	}
	defer s.unlockVM(vmid, true)
	return s.bootLocked(node, vmid, false, tc)
}

// bootLocked is vm_start under the config lock.
func (s *Server) bootLocked(node string, vmid int, skiplock bool, tc *taskCtx) error {
	s.mu.Lock()
	v, err := s.loadVM(node, vmid)
	if err == nil && v.isTemplate() {
		err = die("you can't start a vm if it's a template")
	}
	if err == nil && !skiplock {
		err = checkLock(v)
	}
	if err == nil && v.running {
		err = die("VM %d already running", vmid)
	}
	if err != nil {
		s.mu.Unlock()
		return err
	}
	v.applyPending()
	info := vmInfo(vmid, node, v.conf)
	info.Disk = s.bootDisk(v)
	if info.HasCloudInit {
		tc.t.log = append(tc.t.log, "generating cloud-init ISO")
	}
	s.mu.Unlock()
	if err := tc.sleep(0.5); err != nil {
		return err
	}
	guest, err := s.backendStart(info)
	if err != nil {
		return fmt.Errorf("start failed: %v", err)
	}
	s.mu.Lock()
	now := time.Now()
	agentDelay := s.cfg.AgentDelay
	if s.faults.AgentDelay > 0 {
		agentDelay = s.faults.AgentDelay
	}
	s.nextPID += 3
	v.running, v.pid, v.startedAt = true, s.nextPID, now
	v.agentAt = now.Add(agentDelay)
	v.ipAt = v.agentAt.Add(s.cfg.AgentIPDelay)
	v.noAgent = s.faults.agentMissing(vmid) || guest.NoGuestAgent
	v.guest = guest
	v.boots++
	v.bootGen++
	if v.console == nil {
		v.console = &console{}
	}
	s.scheduleConsole(v, v.bootGen, info, v.boots == 1)
	s.mu.Unlock()
	return tc.sleep(0.5)
}

// bootDisk describes the first disk in a VM's boot order. Callers hold
// s.mu.
func (s *Server) bootDisk(v *vm) DiskInfo {
	for _, d := range bootOrder(v.conf) {
		val, ok := v.conf[d]
		if !ok || !isDriveKey(d) || isCDROM(val) || isCloudInitDrive(val) {
			continue
		}
		file := parseDrive(val).file
		di := DiskInfo{Volume: file, GuestAgent: true}
		if vol := s.findVolume(v.node, file); vol != nil {
			di.GuestAgent = !vol.noGuestAgent
			di.Lineage = append([]int(nil), vol.lineage...)
		}
		return di
	}
	return DiskInfo{}
}

func (s *Server) backendStart(info VMInfo) (GuestInfo, error) {
	m := s.busy(info.VMID)
	m.Lock()
	defer m.Unlock()
	ctx, cancel := s.backendContext()
	defer cancel()
	return s.backend.Start(ctx, info)
}

func (s *Server) backendStop(vmid int) error {
	m := s.busy(vmid)
	m.Lock()
	defer m.Unlock()
	ctx, cancel := s.backendContext()
	defer cancel()
	return s.backend.Stop(ctx, vmid)
}

func (s *Server) backendDestroy(vmid int) error {
	m := s.busy(vmid)
	m.Lock()
	defer m.Unlock()
	ctx, cancel := s.backendContext()
	defer cancel()
	return s.backend.Destroy(ctx, vmid)
}

// haltLocked is _do_vm_stop under the config lock: nothing to do for a VM
// that does not run (not even for one that does not exist).
func (s *Server) haltLocked(node string, vmid int, skiplock bool, tc *taskCtx) error {
	s.mu.Lock()
	v, ok := s.vms[vmid]
	if !ok || v.node != node || !v.running {
		s.mu.Unlock()
		return tc.sleep(1)
	}
	if !skiplock {
		if err := checkLock(v); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	s.mu.Unlock()
	if err := tc.sleep(0.8); err != nil {
		return err
	}
	if err := s.backendStop(vmid); err != nil {
		tc.warn("stopping the backend of VM %d failed: %v", vmid, err)
	}
	s.mu.Lock()
	v.running, v.pid = false, 0
	v.guest = GuestInfo{}
	v.bootGen++
	if v.console != nil {
		v.console.hangup()
	}
	s.mu.Unlock()
	return tc.sleep(0.2)
}

// vmStop is POST .../status/stop and vmShutdown .../status/shutdown.
func (s *Server) vmHalt(typ string) func(*request) (any, error) {
	return func(req *request) (any, error) {
		if err := validate(req.params, powerSpecs); err != nil {
			return nil, err
		}
		if err := rootOnly(req, "skiplock", "keepActive"); err != nil {
			return nil, err
		}
		node, vmid := req.vars["node"], req.vmid()
		skiplock := req.boolean("skiplock")
		return s.startTask(req, node, typ, strconv.Itoa(vmid), func(tc *taskCtx) error {
			if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
				return err
			}
			defer s.unlockVM(vmid, true)
			return s.haltLocked(node, vmid, skiplock, tc)
		})
	}
}

// vmReboot is POST .../status/reboot (and reset): shut down, apply pending
// changes, start again.
func (s *Server) vmReboot(typ string) func(*request) (any, error) {
	return func(req *request) (any, error) {
		if err := validate(req.params, powerSpecs); err != nil {
			return nil, err
		}
		node, vmid := req.vars["node"], req.vmid()
		s.mu.Lock()
		v, ok := s.vms[vmid]
		running := ok && v.node == node && v.running
		s.mu.Unlock()
		if !running {
			return nil, die("VM %d not running", vmid)
		}
		return s.startTask(req, node, typ, strconv.Itoa(vmid), func(tc *taskCtx) error {
			if err := s.lockVM(vmid, true, s.lockWait()); err != nil {
				return err
			}
			defer s.unlockVM(vmid, true)
			half := &taskCtx{s: s, t: tc.t, dur: tc.dur / 2}
			defer func() { tc.warnings += half.warnings }()
			if err := s.haltLocked(node, vmid, false, half); err != nil {
				return err
			}
			return s.bootLocked(node, vmid, true, half)
		})
	}
}
