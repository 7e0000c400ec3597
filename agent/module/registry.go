package module

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	agentv1 "github.com/kthw/kthw/proto/kthw/agent/v1"
)

// Factory builds a module from its request message. It validates the message
// and returns an error wrapping ErrInvalid when it is malformed.
type Factory[M proto.Message] func(msg M) (Module, error)

// Registry maps the module messages of RunModuleRequest's oneof to the
// factories that build them. The zero value is not usable; call NewRegistry
// or Builtins.
type Registry struct {
	factories map[protoreflect.FullName]func(proto.Message) (Module, error)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{factories: map[protoreflect.FullName]func(proto.Message) (Module, error){}}
}

// Register adds the factory for module message type M to r, replacing any
// factory registered for M before.
func Register[M proto.Message](r *Registry, f Factory[M]) {
	var zero M
	name := zero.ProtoReflect().Descriptor().FullName()
	r.factories[name] = func(msg proto.Message) (Module, error) { return f(msg.(M)) }
}

// New builds the module req asks for.
func (r *Registry) New(req *agentv1.RunModuleRequest) (Module, error) {
	msg := req.ProtoReflect()
	oneof := msg.Descriptor().Oneofs().ByName("module")
	field := msg.WhichOneof(oneof)
	if field == nil {
		return nil, fmt.Errorf("%w: no module set", ErrInvalid)
	}
	f, ok := r.factories[field.Message().FullName()]
	if !ok {
		return nil, fmt.Errorf("build module %s: %w", field.Name(), ErrUnsupported)
	}
	m, err := f(msg.Get(field).Message().Interface())
	if err != nil {
		return nil, fmt.Errorf("build module %s: %w", field.Name(), err)
	}
	return m, nil
}
