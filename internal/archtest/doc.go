// Package archtest holds the test that enforces the module's architecture
// (STYLE.md item 18): agent/ and controller/ never import each other, distro/
// and proto/ import nothing else of ours, every package has a doc comment and
// the commands' mains stay tiny. It has no code of its own.
package archtest
