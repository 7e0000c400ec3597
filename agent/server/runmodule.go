package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kthw/kthw/agent/module"
	"github.com/kthw/kthw/distro/pkg"
	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// RunModule checks or applies one module, streaming its log lines and
// progress, and ends with exactly one result. A request the agent cannot
// carry out is a status error; a module that ran and failed is a result with
// an error.
func (s *Server) RunModule(req *agentv1.RunModuleRequest, stream grpc.ServerStreamingServer[agentv1.RunModuleEvent]) error {
	ctx := stream.Context()
	m, err := s.modules.New(req)
	if err != nil {
		return toStatus(err)
	}
	log := s.log.With("module", req.GetName(), "check_only", req.GetCheckOnly())
	events := &eventSender{stream: stream}
	env := &module.Env{
		Root:     s.root,
		Log:      events.log,
		Progress: events.progress,
		Blob:     s.blobs.path,
		Logger:   log,
	}
	env.Runner = module.ExecRunner(env)
	env.Packages = packageManagers(env.Runner, s.root)
	run := m.Apply
	if req.GetCheckOnly() {
		run = m.Check
	}
	log.InfoContext(ctx, "running module")
	start := time.Now()
	res, err := run(ctx, env)
	if ctx.Err() != nil {
		return toStatus(ctx.Err())
	}
	if err != nil && isRequestError(err) {
		log.WarnContext(ctx, "module refused", "err", err)
		return toStatus(err)
	}
	result := &agentv1.ModuleResult{
		Changed:       res.Changed,
		Diff:          validUTF8(res.Diff),
		SkippedReason: validUTF8(res.SkippedReason),
		ExitCode:      -1,
	}
	if res.Ran {
		result.ExitCode = int32(res.ExitCode)
	}
	if res.Output != nil {
		if oerr := setOutput(result, res.Output); oerr != nil && err == nil {
			err = oerr
		}
	}
	if err != nil {
		result.Error = validUTF8(err.Error())
		log.WarnContext(ctx, "module failed", "err", err, "duration", time.Since(start))
	} else {
		log.InfoContext(ctx, "module done", "changed", res.Changed, "duration", time.Since(start))
	}
	if err := events.send(&agentv1.RunModuleEvent{Event: &agentv1.RunModuleEvent_Result{Result: result}}); err != nil {
		return toStatus(err)
	}
	return nil
}

// setOutput puts a module's output into the result's output oneof: the
// oneof's field whose message type is the output's.
func setOutput(result *agentv1.ModuleResult, out proto.Message) error {
	msg := result.ProtoReflect()
	fields := msg.Descriptor().Oneofs().ByName("output").Fields()
	name := out.ProtoReflect().Descriptor().FullName()
	for i := 0; i < fields.Len(); i++ {
		if f := fields.Get(i); f.Message() != nil && f.Message().FullName() == name {
			msg.Set(f, protoreflect.ValueOfMessage(out.ProtoReflect()))
			return nil
		}
	}
	return fmt.Errorf("module output %s has no field in ModuleResult.output", name)
}

// eventSender serializes a module's events onto the stream; modules may log
// from several goroutines. After a failed send it drops further events: the
// stream is broken and the context will end the module.
type eventSender struct {
	stream grpc.ServerStreamingServer[agentv1.RunModuleEvent]

	mu  sync.Mutex
	err error
}

func (e *eventSender) log(stream agentv1.LogLine_Stream, text string) {
	e.send(&agentv1.RunModuleEvent{Event: &agentv1.RunModuleEvent_Log{
		Log: &agentv1.LogLine{Stream: stream, Text: validUTF8(text)},
	}})
}

func (e *eventSender) progress(done, total int64, unit string) {
	e.send(&agentv1.RunModuleEvent{Event: &agentv1.RunModuleEvent_Progress{
		Progress: &agentv1.Progress{Done: done, Total: total, Unit: unit},
	}})
}

func (e *eventSender) send(ev *agentv1.RunModuleEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = e.stream.Send(ev)
	}
	return e.err
}

// validUTF8 makes s fit a proto string field, which must be valid UTF-8;
// paths and command output need not be.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// packageManagers returns what Env.Packages does: the backend named, or the
// one whose binaries are installed under root, running its commands through
// r. root is the agent's root (tests); the backend reads its own state under
// it.
func packageManagers(r pkg.Runner, root string) func(ctx context.Context, name string) (pkg.Manager, error) {
	return func(ctx context.Context, name string) (pkg.Manager, error) {
		if name == "" {
			var err error
			if name, err = pkg.Detect(root); err != nil {
				return nil, err
			}
		}
		return pkg.New(name, r, pkg.Options{Root: root})
	}
}
