// Package pkglab tests the package modules (repository, packages,
// kubernetes packages) of the agent on real lab nodes, with real apt: a
// signed apt repository built and served by the test, and Debian's mirror
// through the lab's apt proxy. It has no code; see its tests.
package pkglab
