package agentv1

// APIVersion is the version of this API. The controller refuses an agent that
// reports another one. It is a variable only so tests can build an agent of
// another API version with -ldflags -X; nothing else may change it.
var APIVersion = "1"

// StreamMagic starts the line the agent prints on stdout, followed by a space,
// the agent version and a newline, right before the multiplexed stream begins.
// Anything the controller reads before it (a chatty shell profile, a motd) is
// discarded.
const StreamMagic = "KTHW-AGENT-STREAM-V1"

// BlobChunkSize is the size of the data chunks PutBlob carries.
const BlobChunkSize = 1 << 20
