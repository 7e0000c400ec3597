// Package agentv1 is the kthw agent API, version 1: the gRPC service the
// controller drives every node's agent through, generated from agent.proto,
// and the transport settings both ends share.
package agentv1
